"""`{{name}}`: a Gantry connector. `get-item` reads one item of a JSON API:
`GET {base_url}/items/{id}` with the secret `api_key` as a bearer token, through Gantry's
`http.send` (under the install's outbound grants)."""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import http, secrets, store
from wit_world.imports.gantry_connector_types import (
    ConfigKey,
    ConnectorError_InvalidInput,
    ConnectorError_NotFound,
    ConnectorError_RateLimited,
    ConnectorError_Unauthorized,
    ConnectorError_Upstream,
    ConnectorInfo,
    OperationInfo,
    SecretKey,
)

from item import InvalidInput, item_id, item_url


def config(key, default):
    try:
        value = store.get(key)
    except Err:
        value = None
    return default if value is None else value


def get_item(input):
    try:
        item = item_id(input)
    except InvalidInput as e:
        raise Err(ConnectorError_InvalidInput(str(e)))
    key = secrets.get("api_key")
    if key is None:
        raise Err(ConnectorError_Unauthorized("the secret `api_key` is not set"))
    url = item_url(config("base_url", "https://api.example.com"), item)
    headers = [("accept", "application/json"), ("authorization", f"Bearer {key}")]
    try:
        response = http.send(http.Request("GET", url, headers, None))
    except Err as e:
        raise Err(ConnectorError_Upstream(f"request failed: {e.value}"))
    status = response.status
    if status in (401, 403):
        raise Err(ConnectorError_Unauthorized(f"HTTP {status}"))
    if status == 404:
        raise Err(ConnectorError_NotFound(f"no item `{item}`"))
    if status == 429:
        raise Err(ConnectorError_RateLimited("HTTP 429"))
    if not 200 <= status <= 299:
        raise Err(ConnectorError_Upstream(f"HTTP {status}"))
    try:
        return {"id": item, "item": json.loads(response.body)}
    except ValueError as e:
        raise Err(ConnectorError_Upstream(f"the answer is not JSON: {e}"))


class Connector(exports.Connector):
    def describe(self) -> ConnectorInfo:
        return ConnectorInfo(
            name="{{name}}",
            version="0.1.0",
            description="Reads items of the Example API",
            operations=[
                OperationInfo(
                    name="get-item",
                    description="One item by its id",
                    input_schema=json.dumps(
                        {
                            "type": "object",
                            "properties": {"id": {"type": "string", "minLength": 1}},
                            "required": ["id"],
                            "additionalProperties": False,
                            "examples": [{"id": "42"}],
                        }
                    ),
                    output_schema=json.dumps(
                        {
                            "type": "object",
                            "properties": {"id": {"type": "string"}, "item": {}},
                            "required": ["id", "item"],
                        }
                    ),
                )
            ],
            config=[
                ConfigKey("base_url", "Base URL of the API", "https://api.example.com", False)
            ],
            secrets=[SecretKey("api_key", "API key, sent as a bearer token", True)],
            # Every origin the connector may call; an install grants some or all of them.
            outbound_hosts=["https://api.example.com"],
        )

    def invoke(self, operation: str, input: str) -> str:
        if operation == "get-item":
            return json.dumps(get_item(input))
        raise Err(ConnectorError_NotFound(f"no operation `{operation}`"))
