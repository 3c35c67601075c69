"""Receiving DICOM from a PACS: the series intake (instances sealed in Redis until their series is
complete), routing a series to a model, and the DIMSE C-STORE SCP (`lrpseg dimse`).

The HTTP side (STOW-RS, commit, the quiet-series sweeper that turns a complete series into a
job) is in service/; this package never imports fastapi, so the SCP runs without it.
"""
