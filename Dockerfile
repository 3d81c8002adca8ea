# One image for the four MetalMart services: `docker run IMAGE order|processor|catalogue|storefront|seed`.
# It carries the app package and its runtime dependencies only, not the demo automation.
# Its dependencies come from the same lock as every laptop's (requirements/app.txt, with hashes).
FROM python:3.11-slim-bookworm AS build
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
