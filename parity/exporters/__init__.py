"""Exporters: model -> artefact on disk. One module per format, imported only when used.

A built-in exporter is ``export(model, example_inputs, path, *, input_names, output_names,
**options) -> dict`` (the metadata to record). A user's own export function, named in a case as
``export.<format>.function``, is called as ``function(model, example_inputs, path, **options)`` and
must write the artefact at ``path``; ``example_inputs`` is a tuple of CPU tensors, one per input.
"""
