# One image for the four MetalMart services: `docker run IMAGE order|processor|catalogue|storefront|seed`.
# It carries the app package and its runtime dependencies only, not the demo automation.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml .
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['app']))" > requirements.txt \
    && python -m venv /opt/metalmart \
    && /opt/metalmart/bin/pip install --no-cache-dir -r requirements.txt

FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --no-create-home metalmart
COPY --from=build /opt/metalmart /opt/metalmart
COPY metalmart /app/metalmart
ENV PATH=/opt/metalmart/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1
WORKDIR /app
USER 10001
EXPOSE 8084 8085 8082 8080
ENTRYPOINT ["python", "-m", "metalmart"]
CMD ["order"]
