# Build: docker build -t quoteapi .
# Migrate (once per release, as the database owner over Neon's direct URL):
#   docker run --rm -e DATABASE_URL=... quoteapi quoteapi migrate
# Serve (Neon's pooled URL): docker run -p 8000:8000 -e DATABASE_URL=... -e CLERK_PUBLISHABLE_KEY=... quoteapi
# Another port: -e QUOTEAPI_PORT=9000 (the server and the health check both read it).

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/quoteapi
COPY requirements.lock pyproject.toml README.md ./
COPY src ./src
COPY alembic ./alembic
# The lock pins every dependency; the wheel carries the migration scripts.
RUN /opt/quoteapi/bin/pip install -c requirements.lock .

FROM python:3.11-slim
ENV PATH=/opt/quoteapi/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 QUOTEAPI_PORT=8000
RUN useradd --system --uid 10001 --no-create-home quoteapi
COPY --from=build /opt/quoteapi /opt/quoteapi
USER quoteapi
WORKDIR /tmp
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os,sys,urllib.request; sys.exit(urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['QUOTEAPI_PORT']}/healthz\", timeout=2).status != 200)"]
CMD ["quoteapi", "serve", "--host", "0.0.0.0"]
