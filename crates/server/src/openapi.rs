//! The OpenAPI 3 document of the API, served at `GET /api/openapi.json`.
//!
//! Kept by hand next to the router; a test checks that every route [`crate::app`] has is in it
//! (and nothing else), and a schemathesis run (`tests/schemathesis.rs`) checks the answers
//! against it.

use axum::Json;
use serde_json::{Value, json};

use crate::MAX_BODY;

/// `GET /api/openapi.json`.
pub(crate) async fn document() -> Json<Value> {
    Json(openapi())
}

fn error_ref() -> Value {
    json!({ "$ref": "#/components/responses/Error" })
}

fn ok_json(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn name_param() -> Value {
    json!({
        "name": "name", "in": "path", "required": true,
        "description": "The target's name.",
        "schema": { "type": "string", "minLength": 1, "maxLength": 256 }
    })
}

fn fingerprint_param() -> Value {
    json!({
        "name": "fingerprint", "in": "path", "required": true,
        "description": "The alert's fingerprint (16 hex digits).",
        "schema": { "type": "string", "minLength": 1, "maxLength": 64 }
    })
}

fn id_param(description: &str) -> Value {
    json!({
        "name": "id", "in": "path", "required": true,
        "description": description,
        "schema": { "type": "string", "minLength": 1, "maxLength": 256 }
    })
}

fn health_op(summary: &str, description: &str, body: Value) -> Value {
    json!({ "get": {
        "summary": summary,
        "description": description,
        "responses": {
            "200": ok_json("Healthy or degraded.", body.clone()),
            "503": ok_json("Unhealthy.", body),
            "default": error_ref(),
        }
    }})
}

/// The OpenAPI 3.0 document of every route [`crate::app`] serves.
pub fn openapi() -> Value {
    let nullable_num = json!({ "type": "number", "nullable": true });
    let nullable_str = json!({ "type": "string", "nullable": true });
    let time_param = |name: &str, what: &str| {
        json!({
            "name": name, "in": "query", "required": false,
            "description": format!("{what}: RFC 3339 (2026-01-31T12:00:00Z) or Unix seconds."),
            "schema": { "type": "string", "maxLength": 64 }
        })
    };
    let write_security = json!([{ "bearer": [] }]);
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Rampart monitor API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!(
                "The HTTP API of `rampart serve`. Errors are `{{\"error\": {{\"code\", \"message\"}}}}`. \
                 Bodies are limited to {MAX_BODY} bytes (413 beyond). Writes need \
                 `Authorization: Bearer TOKEN`."
            ),
        },
        "paths": {
            "/health": { "get": {
                "summary": "Liveness: 200 while the process runs.",
                "responses": {
                    "200": ok_json("Alive.", json!({
                        "type": "object", "required": ["status"],
                        "properties": { "status": { "type": "string", "enum": ["ok"] } }
                    })),
                    "default": error_ref(),
                }
            }},
            "/ready": { "get": {
                "summary": "Readiness: 200 once the store is open and the scheduler runs.",
                "responses": {
                    "200": ok_json("Ready.", json!({
                        "type": "object", "required": ["status"],
                        "properties": { "status": { "type": "string", "enum": ["ready"] } }
                    })),
                    "503": error_ref(),
                    "default": error_ref(),
                }
            }},
            "/metrics": { "get": {
                "summary": "Prometheus text, or OpenMetrics when `Accept` asks for it.",
                "responses": {
                    "200": {
                        "description": "The metrics.",
                        "content": {
                            "text/plain": { "schema": { "type": "string" } },
                            "application/openmetrics-text": { "schema": { "type": "string" } }
                        }
                    },
                    "default": error_ref(),
                }
            }},
            "/api/openapi.json": { "get": {
                "summary": "This document.",
                "responses": {
                    "200": ok_json("OpenAPI 3 document.", json!({ "type": "object" })),
                    "default": error_ref(),
                }
            }},
            "/api/summary": { "get": {
                "summary": "Overall and group scores, counts per state.",
                "responses": {
                    "200": ok_json("The summary.", schema("Summary")),
                    "default": error_ref(),
                }
            }},
            "/api/targets": {
                "get": {
                    "summary": "Every target with its health; no secrets.",
                    "responses": {
                        "200": ok_json("The targets.", json!({
                            "type": "object", "required": ["targets"],
                            "properties": { "targets": { "type": "array", "items": schema("Target") } }
                        })),
                        "default": error_ref(),
                    }
                },
                "post": {
                    "summary": "Creates a target (as in a `[[target]]` table, in JSON).",
                    "security": write_security,
                    "requestBody": {
                        "required": true,
                        "content": { "application/json": { "schema": schema("TargetDefinition") } }
                    },
                    "responses": {
                        "201": ok_json("Created; the target as it now runs.", schema("Target")),
                        "400": error_ref(), "401": error_ref(), "409": error_ref(),
                        "413": error_ref(), "422": error_ref(), "503": error_ref(),
                        "default": error_ref(),
                    }
                }
            },
            "/api/targets/{name}": {
                "parameters": [name_param()],
                "get": {
                    "summary": "One target with its health.",
                    "responses": {
                        "200": ok_json("The target.", schema("Target")),
                        "404": error_ref(),
                        "default": error_ref(),
                    }
                },
                "put": {
                    "summary": "Creates or replaces an API target; 403 for a target of the file.",
                    "security": write_security,
                    "requestBody": {
                        "required": true,
                        "content": { "application/json": { "schema": schema("TargetDefinition") } }
                    },
                    "responses": {
                        "200": ok_json("The target as it now runs.", schema("Target")),
                        "400": error_ref(), "401": error_ref(), "403": error_ref(),
                        "413": error_ref(), "422": error_ref(), "503": error_ref(),
                        "default": error_ref(),
                    }
                },
                "delete": {
                    "summary": "Deletes an API target; its history stays.",
                    "security": write_security,
                    "responses": {
                        "204": { "description": "Deleted." },
                        "401": error_ref(), "403": error_ref(), "404": error_ref(),
                        "503": error_ref(),
                        "default": error_ref(),
                    }
                }
            },
            "/api/targets/{name}/results": { "get": {
                "summary": "Raw results or rollups over `from..to`.",
                "description": "`to` defaults to now, `from` to an hour before `to`; the range is \
                                at most 3660 days. `step` is chosen for the range when absent; a \
                                step too fine for the range is 422 `range_too_long`.",
                "parameters": [
                    name_param(),
                    time_param("from", "Start (inclusive)"),
                    time_param("to", "End (exclusive)"),
                    { "name": "step", "in": "query", "required": false,
                      "schema": { "type": "string", "enum": ["raw", "1m", "1h", "1d"] } }
                ],
                "responses": {
                    "200": ok_json("The points.", schema("Results")),
                    "400": error_ref(), "404": error_ref(), "422": error_ref(),
                    "503": error_ref(),
                    "default": error_ref(),
                }
            }},
            "/api/targets/{name}/incidents": { "get": {
                "summary": "The target's incidents, oldest first.",
                "parameters": [name_param()],
                "responses": {
                    "200": ok_json("The incidents.", json!({
                        "type": "object", "required": ["target", "incidents"],
                        "properties": {
                            "target": { "type": "string" },
                            "incidents": { "type": "array", "items": {
                                "type": "object",
                                "required": ["id", "opened", "closed", "open", "state", "cause"],
                                "properties": {
                                    "id": { "type": "integer" },
                                    "opened": { "type": "string", "format": "date-time" },
                                    "closed": { "type": "string", "format": "date-time", "nullable": true },
                                    "open": { "type": "boolean" },
                                    "state": { "type": "string" },
                                    "cause": nullable_str,
                                }
                            }}
                        }
                    })),
                    "404": error_ref(), "503": error_ref(),
                    "default": error_ref(),
                }
            }},
            "/api/heartbeat/{token}": { "post": {
                "summary": "Records a heartbeat; the token is the credential, never echoed.",
                "parameters": [{
                    "name": "token", "in": "path", "required": true,
                    "schema": { "type": "string", "minLength": 1, "maxLength": 256 }
                }],
                "responses": {
                    "200": ok_json("Recorded.", json!({
                        "type": "object", "required": ["target"],
                        "properties": { "target": { "type": "string" } }
                    })),
                    "404": error_ref(),
                    "default": error_ref(),
                }
            }},
            "/api/alerts": { "get": {
                "summary": "Every alert (pending, firing, resolved awaiting its notification), firing first.",
                "parameters": [{
                    "name": "state", "in": "query", "required": false,
                    "schema": { "type": "string", "enum": ["firing", "pending", "resolved"] }
                }],
                "responses": {
                    "200": ok_json("The alerts.", json!({
                        "type": "object", "required": ["alerts"],
                        "properties": { "alerts": { "type": "array", "items": schema("Alert") } }
                    })),
                    "400": error_ref(),
                    "404": error_ref(),
                    "default": error_ref(),
                }
            }},
            "/api/alerts/{fingerprint}": { "get": {
                "summary": "One alert by fingerprint.",
                "parameters": [fingerprint_param()],
                "responses": {
                    "200": ok_json("The alert.", schema("Alert")),
                    "404": error_ref(),
                    "default": error_ref(),
                }
            }},
            "/api/alerts/{fingerprint}/ack": { "post": {
                "summary": "Acknowledge a firing alert: escalation stops, receivers are told.",
                "security": write_security.clone(),
                "parameters": [fingerprint_param()],
                "requestBody": { "required": true, "content": { "application/json": { "schema": {
                    "type": "object", "required": ["by"], "additionalProperties": false,
                    "properties": {
                        "by": { "type": "string", "minLength": 1, "maxLength": 1024 },
                        "comment": { "type": "string", "maxLength": 1024 }
                    }
                }}}},
                "responses": {
                    "200": ok_json("The acknowledged alert.", schema("Alert")),
                    "400": error_ref(), "401": error_ref(), "404": error_ref(),
                    "409": error_ref(), "422": error_ref(),
                    "default": error_ref(),
                }
            }},
            "/api/silences": {
                "get": {
                    "summary": "Every silence with its status (active, pending, expired), newest first.",
                    "responses": {
                        "200": ok_json("The silences.", json!({
                            "type": "object", "required": ["silences"],
                            "properties": { "silences": { "type": "array", "items": schema("Silence") } }
                        })),
                        "404": error_ref(),
                        "default": error_ref(),
                    }
                },
                "post": {
                    "summary": "Create a silence: matchers and `ends_at` or `duration`.",
                    "security": write_security.clone(),
                    "requestBody": { "required": true, "content": { "application/json": { "schema": {
                        "type": "object", "required": ["matchers", "created_by"],
                        "additionalProperties": false,
                        "properties": {
                            "matchers": { "type": "array", "minItems": 1, "maxItems": 16,
                                "items": { "type": "string", "minLength": 1, "maxLength": 256 } },
                            "starts_at": { "type": "string", "format": "date-time" },
                            "ends_at": { "type": "string", "format": "date-time" },
                            "duration": { "type": "string", "maxLength": 64 },
                            "created_by": { "type": "string", "minLength": 1, "maxLength": 256 },
                            "comment": { "type": "string", "maxLength": 1024 }
                        }
                    }}}},
                    "responses": {
                        "201": ok_json("The silence, with its id.", schema("Silence")),
                        "400": error_ref(), "401": error_ref(), "404": error_ref(), "422": error_ref(),
                        "default": error_ref(),
                    }
                }
            },
            "/api/silences/{id}": {
                "get": {
                    "summary": "One silence.",
                    "parameters": [id_param("The silence's id.")],
                    "responses": {
                        "200": ok_json("The silence.", schema("Silence")),
                        "404": error_ref(),
                        "default": error_ref(),
                    }
                },
                "delete": {
                    "summary": "End a silence now.",
                    "security": write_security.clone(),
                    "parameters": [id_param("The silence's id.")],
                    "responses": {
                        "200": ok_json("The silence as it is now.", schema("Silence")),
                        "401": error_ref(), "404": error_ref(),
                        "default": error_ref(),
                    }
                }
            },
            "/api/notifications": { "get": {
                "summary": "The notification outbox, oldest first, and each receiver's counters.",
                "parameters": [
                    { "name": "state", "in": "query", "required": false,
                      "schema": { "type": "string", "enum": ["pending", "delivered", "dead"] } },
                    { "name": "receiver", "in": "query", "required": false,
                      "schema": { "type": "string", "maxLength": 256 } },
                    { "name": "limit", "in": "query", "required": false,
                      "schema": { "type": "integer", "minimum": 0, "maximum": 1000 } },
                    { "name": "after", "in": "query", "required": false,
                      "schema": { "type": "integer" } }
                ],
                "responses": {
                    "200": ok_json("Entries and receivers.", json!({
                        "type": "object", "required": ["notifications", "receivers"],
                        "properties": {
                            "notifications": { "type": "array", "items": { "type": "object" } },
                            "receivers": { "type": "array", "items": { "type": "object" } }
                        }
                    })),
                    "400": error_ref(), "404": error_ref(),
                    "default": error_ref(),
                }
            }},
            "/api/notifications/{id}/retry": { "post": {
                "summary": "Put a dead letter back on its receiver's queue.",
                "security": write_security.clone(),
                "parameters": [id_param("The notification's id.")],
                "responses": {
                    "200": ok_json("The entry, pending again.", json!({ "type": "object" })),
                    "401": error_ref(), "404": error_ref(),
                    "default": error_ref(),
                }
            }},
            "/api/database/health": health_op(
                "The history store and the daemon's connection pools.",
                "`healthy` (200): a trivial query answered within 500 ms and every pool is \
                 healthy; `degraded` (200): it was slower or a pool is not healthy; `unhealthy` \
                 (503): no store, or the query failed or took longer than 2 s.",
                schema("DatabaseHealth"),
            ),
            "/api/circuit-breakers/health": health_op(
                "The daemon's circuit breakers.",
                "`healthy` (200): every breaker is closed (or there is none); `degraded` (200): \
                 some are open or half-open; `unhealthy` (503): every breaker rejects calls.",
                schema("BreakersHealth"),
            ),
        },
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http", "scheme": "bearer",
                    "description": "The `[server]` write token (`write_token_env` or `write_token_file`)."
                }
            },
            "responses": {
                "Error": ok_json("An error.", schema("Error")),
            },
            "schemas": {
                "Error": {
                    "type": "object", "required": ["error"],
                    "properties": { "error": {
                        "type": "object", "required": ["code", "message"],
                        "properties": {
                            "code": { "type": "string", "description": "Stable, machine-readable: not_found, bad_request, unauthorized, forbidden, read_only, conflict, invalid_target, range_too_long, payload_too_large, method_not_allowed, unavailable, timeout, internal." },
                            "message": { "type": "string" },
                            "problems": { "type": "array", "items": {
                                "type": "object", "required": ["path", "message"],
                                "properties": {
                                    "path": { "type": "string" },
                                    "message": { "type": "string" }
                                }
                            }}
                        }
                    }}
                },
                "Alert": {
                    "type": "object",
                    "required": ["fingerprint", "rule", "target", "state", "severity", "labels", "annotations"],
                    "properties": {
                        "fingerprint": { "type": "string" },
                        "rule": { "type": "string" },
                        "target": { "type": "string" },
                        "state": { "type": "string", "enum": ["pending", "firing", "resolved"] },
                        "severity": { "type": "string", "enum": ["info", "warning", "critical"] },
                        "labels": { "type": "object", "additionalProperties": { "type": "string" } },
                        "annotations": { "type": "object", "additionalProperties": { "type": "string" } },
                        "value": nullable_num.clone(),
                        "starts_at": nullable_str.clone(),
                        "ends_at": nullable_str.clone(),
                        "acknowledged": { "type": "object", "nullable": true },
                        "silenced_by": { "type": "array", "items": { "type": "string" } },
                        "inhibited_by": nullable_str.clone(),
                    }
                },
                "Silence": {
                    "type": "object",
                    "required": ["id", "matchers", "starts_at", "ends_at", "created_by", "comment", "status"],
                    "properties": {
                        "id": { "type": "string" },
                        "matchers": { "type": "array", "items": { "type": "object" } },
                        "starts_at": { "type": "string", "format": "date-time" },
                        "ends_at": { "type": "string", "format": "date-time" },
                        "created_by": { "type": "string" },
                        "comment": { "type": "string" },
                        "updated_at": { "type": "string", "format": "date-time" },
                        "status": { "type": "string", "enum": ["active", "pending", "expired"] }
                    }
                },
                "Summary": {
                    "type": "object", "required": ["overall", "groups", "counts", "targets"],
                    "properties": {
                        "overall": nullable_num,
                        "groups": { "type": "object" },
                        "counts": { "type": "object", "additionalProperties": { "type": "integer", "minimum": 0 } },
                        "targets": { "type": "array", "items": {
                            "type": "object", "required": ["name", "state", "score"],
                            "properties": {
                                "name": { "type": "string" },
                                "state": { "type": "string" },
                                "score": nullable_num,
                            }
                        }}
                    }
                },
                "TargetDefinition": {
                    "type": "object", "required": ["name", "kind"],
                    "description": "A target as in a `[[target]]` table of the configuration (see docs/monitor.md).",
                    "properties": {
                        "name": { "type": "string", "minLength": 1, "maxLength": 256 },
                        "kind": { "type": "string", "enum": ["tcp", "http", "dns", "tls", "cert", "postgres", "redis", "mqtt", "heartbeat"] },
                        "group": { "type": "string" },
                        "interval": { "type": "string" },
                        "timeout": { "type": "string" },
                        "weight": { "type": "number" },
                        "depends_on": { "type": "array", "items": { "type": "string" } }
                    },
                    "additionalProperties": true
                },
                "Target": {
                    "type": "object",
                    "required": ["name", "group", "kind", "host", "interval_s", "timeout_s", "weight", "depends_on", "source", "health"],
                    "properties": {
                        "name": { "type": "string" },
                        "group": nullable_str,
                        "kind": { "type": "string" },
                        "host": nullable_str,
                        "interval_s": { "type": "number", "minimum": 0 },
                        "timeout_s": { "type": "number", "minimum": 0 },
                        "weight": { "type": "number" },
                        "depends_on": { "type": "array", "items": { "type": "string" } },
                        "source": { "type": "string", "enum": ["api", "config"] },
                        "health": {
                            "type": "object", "nullable": true,
                            "properties": {
                                "state": { "type": "string" },
                                "own_state": { "type": "string" },
                                "unreachable_via": nullable_str,
                                "score": nullable_num,
                                "consecutive_failures": { "type": "integer", "minimum": 0 },
                                "consecutive_successes": { "type": "integer", "minimum": 0 },
                                "last_latency_ms": nullable_num,
                            }
                        }
                    }
                },
                "Results": {
                    "type": "object", "required": ["target", "from", "to", "step", "points"],
                    "properties": {
                        "target": { "type": "string" },
                        "from": { "type": "string", "format": "date-time" },
                        "to": { "type": "string", "format": "date-time" },
                        "step": { "type": "string", "enum": ["raw", "1m", "1h", "1d"] },
                        "points": { "type": "array", "maxItems": 5000, "items": { "type": "object" } }
                    }
                },
                "DatabaseHealth": {
                    "type": "object", "required": ["status", "store", "pools"],
                    "properties": {
                        "status": { "type": "string", "enum": ["healthy", "degraded", "unhealthy"] },
                        "store": {
                            "type": "object", "required": ["reachable", "store_failures"],
                            "properties": {
                                "reachable": { "type": "boolean" },
                                "engine": { "type": "string" },
                                "path": nullable_str,
                                "latency_ms": { "type": "number", "minimum": 0 },
                                "schema_version": { "type": "integer", "nullable": true },
                                "page_count": { "type": "integer", "nullable": true },
                                "page_size": { "type": "integer", "nullable": true },
                                "wal_bytes": { "type": "integer", "nullable": true },
                                "pending_writes": { "type": "integer", "nullable": true },
                                "commits": { "type": "integer", "nullable": true },
                                "store_failures": { "type": "integer", "minimum": 0 },
                                "error": { "type": "string" }
                            }
                        },
                        "pools": { "type": "array", "items": { "type": "object" } }
                    }
                },
                "BreakersHealth": {
                    "type": "object", "required": ["status", "total", "open", "breakers"],
                    "properties": {
                        "status": { "type": "string", "enum": ["healthy", "degraded", "unhealthy"] },
                        "total": { "type": "integer", "minimum": 0 },
                        "open": { "type": "integer", "minimum": 0 },
                        "breakers": { "type": "array", "items": {
                            "type": "object",
                            "required": ["name", "state", "failed", "successful", "rejected", "opened", "last_transition"],
                            "properties": {
                                "name": { "type": "string" },
                                "state": { "type": "string", "enum": ["closed", "open", "half_open", "forced_open", "disabled"] },
                                "failure_rate": nullable_num,
                                "consecutive_failures": { "type": "integer", "minimum": 0 },
                                "successful": { "type": "integer", "minimum": 0 },
                                "failed": { "type": "integer", "minimum": 0 },
                                "rejected": { "type": "integer", "minimum": 0 },
                                "opened": { "type": "integer", "minimum": 0 },
                                "last_transition": {
                                    "type": "object", "nullable": true,
                                    "properties": {
                                        "from": { "type": "string" },
                                        "to": { "type": "string" },
                                        "at": { "type": "string", "format": "date-time" }
                                    }
                                }
                            }
                        }}
                    }
                }
            }
        }
    })
}
