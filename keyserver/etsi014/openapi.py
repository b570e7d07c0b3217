"""OpenAPI 3.0 description of the KME's ETSI GS QKD 014 API (served at /api/v1/openapi.json)."""

from __future__ import annotations

from typing import Any

from keyserver.etsi014.messages import Limits
from keyserver.etsi014.statuswatch import MAX_VERSION, MAX_WAIT_S

API_PREFIX = "/api/v1/keys"
OPENAPI_PATH = "/api/v1/openapi.json"
STATUS_CODES = ("200", "400", "401", "503")


def _errors() -> dict[str, Any]:
    err = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    return {
        "400": {"description": "Bad request format", "content": err},
        "401": {
            "description": "Unauthorized (no, unknown or wrong client certificate)",
            "content": err,
        },
        "503": {
            "description": "Error on server side (no key material, peer KME down)",
            "content": err,
        },
    }


def _ok(schema: str) -> dict[str, Any]:
    return {
        "200": {
            "description": "Successful response",
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
        },
        **_errors(),
    }


def _sae_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def _watch_params() -> list[dict[str, Any]]:
    """An extension of this KME (not ETSI's): a status request held until it changes."""
    return [
        {
            "name": "after",
            "in": "query",
            "required": False,
            "description": "extension: answer once status_extension.status_version is not "
            "this (give wait as well)",
            "schema": {"type": "integer", "minimum": 0, "maximum": MAX_VERSION - 1},
        },
        {
            "name": "wait",
            "in": "query",
            "required": False,
            "description": "extension: ... or after this many seconds, unchanged",
            "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_WAIT_S},
        },
    ]


def openapi_document(limits: Limits, kme_id: str, watched: bool = False) -> dict[str, Any]:
    """The API's OpenAPI 3.0 document; `watched`: Get status takes the watch extension's
    ``after`` and ``wait`` (:mod:`keyserver.etsi014.statuswatch`)."""
    int_field = {"type": "integer"}
    key_req_body = {
        "required": False,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/KeyRequest"}}},
    }
    ids_body = {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/KeyIDs"}}},
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": f"ETSI GS QKD 014 key delivery API ({kme_id})",
            "version": "1.1.1",
            "description": (
                "Key delivery to SAEs per ETSI GS QKD 014 V1.1.1. Mutual TLS: the caller's SAE ID "
                "is the subject CN of its client certificate; every request, this document's "
                "included, is authenticated. Key sizes are in bits, multiples of 8. Delivered "
                "keys are removed from the KME. Every error has a JSON Error body."
            ),
        },
        "paths": {
            OPENAPI_PATH: {
                "get": {
                    "summary": "This document (needs a client certificate like every call)",
                    "operationId": "getOpenApi",
                    "responses": {
                        "200": {
                            "description": "The OpenAPI document",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        },
                        **{k: v for k, v in _errors().items() if k != "400"},
                    },
                }
            },
            API_PREFIX + "/{slave_SAE_ID}/status": {
                "get": {
                    "summary": "Get status",
                    "operationId": "getStatus",
                    "parameters": [
                        _sae_param("slave_SAE_ID"),
                        *(_watch_params() if watched else []),
                    ],
                    "responses": _ok("Status"),
                }
            },
            API_PREFIX + "/{slave_SAE_ID}/enc_keys": {
                "get": {
                    "summary": "Get key (simple form)",
                    "operationId": "getKeyGet",
                    "parameters": [
                        _sae_param("slave_SAE_ID"),
                        {
                            "name": "number",
                            "in": "query",
                            "required": False,
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": limits.max_key_per_request,
                            },
                        },
                        {
                            "name": "size",
                            "in": "query",
                            "required": False,
                            "schema": {
                                "type": "integer",
                                "minimum": limits.min_key_size,
                                "maximum": limits.max_key_size,
                                "multipleOf": 8,
                            },
                        },
                    ],
                    "responses": _ok("KeyContainer"),
                },
                "post": {
                    "summary": "Get key",
                    "operationId": "getKey",
                    "parameters": [_sae_param("slave_SAE_ID")],
                    "requestBody": key_req_body,
                    "responses": _ok("KeyContainer"),
                },
            },
            API_PREFIX + "/{master_SAE_ID}/dec_keys": {
                "get": {
                    "summary": "Get key with key IDs (simple form, one key)",
                    "operationId": "getKeyWithKeyIdsGet",
                    "parameters": [
                        _sae_param("master_SAE_ID"),
                        {
                            "name": "key_ID",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string", "format": "uuid"},
                        },
                    ],
                    "responses": _ok("KeyContainer"),
                },
                "post": {
                    "summary": "Get key with key IDs",
                    "operationId": "getKeyWithKeyIds",
                    "parameters": [_sae_param("master_SAE_ID")],
                    "requestBody": ids_body,
                    "responses": _ok("KeyContainer"),
                },
            },
        },
        "components": {
            "schemas": {
                "Status": {
                    "type": "object",
                    "required": [
                        "source_KME_ID",
                        "target_KME_ID",
                        "master_SAE_ID",
                        "slave_SAE_ID",
                        "key_size",
                        "stored_key_count",
                        "max_key_count",
                        "max_key_per_request",
                        "max_key_size",
                        "min_key_size",
                        "max_SAE_ID_count",
                    ],
                    "properties": {
                        "source_KME_ID": {"type": "string"},
                        "target_KME_ID": {"type": "string"},
                        "master_SAE_ID": {"type": "string"},
                        "slave_SAE_ID": {"type": "string"},
                        "key_size": int_field,
                        "stored_key_count": int_field,
                        "max_key_count": int_field,
                        "max_key_per_request": int_field,
                        "max_key_size": int_field,
                        "min_key_size": int_field,
                        "max_SAE_ID_count": int_field,
                        "status_extension": {
                            "type": "object",
                            "description": "qkd_link: link statistics (qber, key_rate_bps, "
                            "blocks_ok, blocks_aborted, eavesdropper_alarm, ...)",
                        },
                    },
                },
                "KeyRequest": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "number": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": limits.max_key_per_request,
                        },
                        "size": {
                            "type": "integer",
                            "minimum": limits.min_key_size,
                            "maximum": limits.max_key_size,
                            "multipleOf": 8,
                        },
                        "additional_slave_SAE_IDs": {
                            "type": "array",
                            "items": {"type": "string"},
                            "maxItems": limits.max_sae_id_count,
                        },
                        "extension_mandatory": {
                            "type": "array",
                            "items": {"type": "object"},
                            "description": "No extension is supported: a non-empty array is "
                            "refused with 400.",
                        },
                        "extension_optional": {
                            "type": "array",
                            "items": {"type": "object"},
                            "description": "Accepted and ignored.",
                        },
                    },
                },
                "KeyIDs": {
                    "type": "object",
                    "required": ["key_IDs"],
                    "additionalProperties": False,
                    "properties": {
                        "key_IDs": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": limits.max_key_per_request,
                            "items": {
                                "type": "object",
                                "required": ["key_ID"],
                                "properties": {
                                    "key_ID": {"type": "string", "format": "uuid"},
                                    "key_ID_extension": {"type": "object"},
                                },
                            },
                        },
                        "key_IDs_extension": {"type": "object"},
                    },
                },
                "KeyContainer": {
                    "type": "object",
                    "required": ["keys"],
                    "properties": {
                        "keys": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["key_ID", "key"],
                                "properties": {
                                    "key_ID": {"type": "string", "format": "uuid"},
                                    "key": {"type": "string", "format": "byte"},
                                },
                            },
                        },
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["message"],
                    "properties": {
                        "message": {"type": "string"},
                        "details": {"type": "array", "items": {"type": "object"}},
                    },
                },
            }
        },
    }
