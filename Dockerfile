# syntax=docker/dockerfile:1
# Build: docker build -t proxmigrate:0.1.0 .   (see docs/install.md)
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.12-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin proxmigrate
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 10001:10001
# No writes outside /tmp (mount an emptyDir there under readOnlyRootFilesystem).
ENV HOME=/tmp
EXPOSE 8080 8081
ENTRYPOINT ["proxmigrate", "run"]
