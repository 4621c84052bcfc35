"""Runners: artefact on disk -> outputs, on one backend. One module per runtime, imported only when used."""
