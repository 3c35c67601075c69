"""The `lrpseg` command: every launcher in one place, above the packages it starts.

launch -> service, workers, core, lrpseg (tests/test_import_graph.py); nothing imports launch.
Each subcommand's module is imported only when it runs, so `lrpseg worker` never loads FastAPI.
"""
