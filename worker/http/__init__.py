"""The HTTP API of smsc-mailer (``smsc-mailer serve``): the CLI's commands over HTTP on FastAPI + uvicorn.

- :mod:`worker.http.app` — :func:`~worker.http.app.create_app`, the access log, the body limit, the
  OpenAPI document (committed as docs/openapi.json);
- :mod:`worker.http.api` — the ``/v1`` routes;
- :mod:`worker.http.auth` — bearer tokens (``SMSC_API_TOKENS``) and the dashboard's cookie;
- :mod:`worker.http.problems` — every error as ``application/problem+json`` (RFC 9457);
- :mod:`worker.http.serve` — :func:`~worker.http.serve.serve` on uvicorn, the ``api-token`` command.

docs/http-api.md describes the routes, the tokens and the errors.
"""
