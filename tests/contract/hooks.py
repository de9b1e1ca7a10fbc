"""Schemathesis hooks for Gantry's API contract run.

The publish route takes a component's bytes (`application/wasm`), which Schemathesis has no
generator for: give it arbitrary bytes (the server answers 422 `invalid-component` for
anything that is not a component, a rule no schema can state) and, now and then, the bytes
of a real sample component, so publishing itself is exercised too.
"""

import os
import pathlib

import schemathesis
from hypothesis import strategies as st

SAMPLES = pathlib.Path(os.environ["GANTRY_SAMPLES"])
COMPONENTS = [p.read_bytes() for p in sorted(SAMPLES.glob("*.wasm"))[:3]]

schemathesis.openapi.media_type(
    "application/wasm",
    st.one_of(st.binary(max_size=4096), st.sampled_from(COMPONENTS)),
)

BACKUPS = pathlib.Path(os.environ["GANTRY_CONTRACT_WORK"]) / "backups"


@schemathesis.hook
def map_body(ctx, body):
    """A backup goes where the fuzzer's run may write: under its work directory, never at an
    absolute path of its choosing on this machine."""
    if ctx.operation.path == "/v1/backup" and isinstance(body, dict):
        to = body.get("to")
        if isinstance(to, str) and to.startswith("/"):
            body["to"] = str(BACKUPS / to.lstrip("/").replace("\x00", ""))
    return body
