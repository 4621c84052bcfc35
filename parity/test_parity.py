"""The test that ``pytest parity/`` collects: one item per (case, format, backend, check).

The parity plugin (``parity.plugin``) parametrizes ``parity_target`` from the case files, so ids
read ``test_parity[tiny_cnn-onnx-cpu-parity]`` and ``-k onnx`` / ``-k tiny_cnn`` select as expected.
"""

import pytest

from parity.causes import failure_text


def test_parity(parity_target, parity_session, request):
    __tracebackhide__ = True
    result = parity_session.run(parity_target)
    # What the `record_property` fixture does, without its warning under JUnit's default xunit2 family:
    # the plugin turns this record into flat JUnit properties (and collects it for the reports).
    request.node.user_properties.append(("parity", result.record))
    if result.status == "skipped":
        pytest.skip(result.message)
    if result.status in ("failed", "error"):  # the cause and why first, the fix last
        record = result.record
        pytest.fail(failure_text(result.message, record.get("cause"), record.get("why", ""), record.get("fix", "")),
                    pytrace=False)
