# One image for the four MetalMart services: `docker run IMAGE order|processor|catalogue|storefront|seed`.
# It carries the app package and its runtime dependencies only, not the demo automation.
# Its dependencies come from the same lock as every laptop's (requirements/app.txt, with hashes).
FROM python:3.11-slim-bookworm AS build
# A C compiler for the locked packages that publish no wheel for the platform being built (hdrhistogram has none
# for linux/aarch64: every Apple Silicon minikube node). It stays in this stage: the image below copies only the venv.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY requirements/app.txt requirements.txt
RUN python -m venv /opt/metalmart \
    && /opt/metalmart/bin/pip install --no-cache-dir --require-hashes -r requirements.txt

FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --no-create-home metalmart
COPY --from=build /opt/metalmart /opt/metalmart
COPY metalmart /app/metalmart
ENV PATH=/opt/metalmart/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1
WORKDIR /app
USER 10001
ENTRYPOINT ["python", "-m", "metalmart"]
CMD ["order"]
