"""`rest-py`: the `rest-json` connector in Python — the same operations, configuration, secret
and errors — calling the API through Gantry's `http.send` (under the same outbound policy as
every other connector)."""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import http, secrets, store
from wit_world.imports.gantry_connector_types import (
    ConfigKey,
    ConnectorError_Internal,
    ConnectorError_InvalidInput,
    ConnectorError_NotFound,
    ConnectorError_RateLimited,
    ConnectorError_Unauthorized,
    ConnectorError_Upstream,
    ConnectorInfo,
    OperationInfo,
    SecretKey,
)


def object_schema(properties, required):
    return json.dumps({"type": "object", "properties": properties, "required": required})


def request_schema(with_body):
    properties = {"path": {"type": "string", "pattern": "^/"}}
    if with_body:
        properties["body"] = {}
    return object_schema(properties, ["path"])


RESPONSE_SCHEMA = object_schema({"status": {"type": "integer"}, "body": {}}, ["status", "body"])


def config(key):
    try:
        return store.get(key)
    except Err:
        return None


def call(method, document):
    base = config("base_url")
    if base is None:
        raise Err(ConnectorError_Internal("config `base_url` is not set"))
    path = document.get("path")
    if not isinstance(path, str):
        raise Err(ConnectorError_InvalidInput("`path` must be a string"))
    if not path.startswith("/"):
        raise Err(ConnectorError_InvalidInput("`path` must start with `/`"))
    headers = [("accept", "application/json")]
    key = secrets.get("api_key")
    if key is not None:
        header = config("auth_header") or "authorization"
        scheme = config("auth_scheme") or "Bearer"
        headers.append((header, f"{scheme} {key}"))
    body = None
    if "body" in document:
        headers.append(("content-type", "application/json"))
        body = json.dumps(document["body"]).encode()
    try:
        response = http.send(http.Request(method, base.rstrip("/") + path, headers, body))
    except Err as e:
        raise Err(ConnectorError_Upstream(f"request failed: {e.value}"))
    status = response.status
    try:
        parsed = json.loads(response.body)
    except ValueError:
        parsed = response.body.decode("utf-8", "replace")
    if status in (401, 403):
        raise Err(ConnectorError_Unauthorized(f"HTTP {status}"))
    if status == 404:
        raise Err(ConnectorError_NotFound(f"{path}: HTTP 404"))
    if status == 429:
        raise Err(ConnectorError_RateLimited("HTTP 429"))
    if status >= 500:
        raise Err(ConnectorError_Upstream(f"HTTP {status}"))
    return {"status": status, "body": parsed}


class Connector(exports.Connector):
    def describe(self) -> ConnectorInfo:
        anything = json.dumps({"type": "object"})
        return ConnectorInfo(
            name="rest-py",
            version="1.0.0",
            description="Call any JSON REST API with an API key (Python)",
            operations=[
                OperationInfo("echo", "Answer the input document unchanged", anything, anything),
                OperationInfo(
                    "get", "GET `path` relative to `base_url`", request_schema(False), RESPONSE_SCHEMA
                ),
                OperationInfo(
                    "post", "POST `body` as JSON to `path`", request_schema(True), RESPONSE_SCHEMA
                ),
            ],
            config=[
                ConfigKey("base_url", "Base URL of the API", None, True),
                ConfigKey("auth_header", "Header carrying the key", "authorization", False),
                ConfigKey("auth_scheme", "Prefix of the key in the header", "Bearer", False),
            ],
            secrets=[SecretKey("api_key", "The API key", False)],
            outbound_hosts=["*"],
        )

    def invoke(self, operation: str, input: str) -> str:
        try:
            document = json.loads(input)
        except ValueError as e:
            raise Err(ConnectorError_InvalidInput(f"input is not JSON: {e}"))
        if not isinstance(document, dict):
            raise Err(ConnectorError_InvalidInput("input must be a JSON object"))
        if operation == "echo":
            return json.dumps(document)
        if operation == "get":
            return json.dumps(call("GET", document))
        if operation == "post":
            return json.dumps(call("POST", document))
        raise Err(ConnectorError_NotFound(f"unknown operation `{operation}`"))
