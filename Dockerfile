# One image for the three services; compose picks the service with `command`.
FROM python:3.11-slim AS build
COPY --from=ghcr.io/astral-sh/uv:0.5 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --extra otlp --no-install-project
COPY shared ./shared
COPY services ./services
RUN uv sync --frozen --no-dev --extra otlp

FROM python:3.11-slim
RUN useradd --system --uid 10001 rujukan
WORKDIR /app
COPY --from=build /app /app
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1
USER rujukan
EXPOSE 8001 8002 8003
CMD ["python", "-m", "intake"]
