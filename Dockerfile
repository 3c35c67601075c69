# lrpseg: one image for the API and the workers (docker-compose.yml picks the command).
# The PyPI torch wheel for linux/x86_64 carries its CUDA libraries, so the same image runs on
# CPU or, with a GPU reservation, on NVIDIA GPUs.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
RUN useradd --create-home --uid 10001 lrpseg

# Dependencies first: this layer is rebuilt only when pyproject.toml or constraints.txt changes.
# constraints.txt: the versions CI last passed with.
COPY pyproject.toml README.md constraints.txt ./
RUN mkdir -p lrpseg service workers schemas core launch pacs \
    && touch lrpseg/__init__.py service/__init__.py workers/__init__.py schemas/__init__.py core/__init__.py launch/__init__.py pacs/__init__.py \
    && pip install -c constraints.txt . \
    && pip uninstall -y lrpseg \
    && rm -rf lrpseg service workers schemas core launch pacs build

COPY lrpseg ./lrpseg
COPY service ./service
COPY workers ./workers
COPY schemas ./schemas
COPY core ./core
COPY launch ./launch
COPY pacs ./pacs
RUN pip install --no-deps . && rm -rf build

USER lrpseg
# The API binds all interfaces by its command line only: workers from this image never see a
# non-loopback host, and the API refuses to start there without API keys (docs/security.md).
ENV LRPSEG_PORT=8000
EXPOSE 8000
CMD ["lrpseg", "api", "--host", "0.0.0.0"]
