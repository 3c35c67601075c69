"""What the API and the workers share: settings, Redis records, job meta, logs, recovery, security rules.

Imports schemas and lrpseg, never service, workers or fastapi (tests/test_import_graph.py).
"""
