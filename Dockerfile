# The Airflow image for the full stack (docker-compose.yaml): the official image plus the tools the
# backup, restore and runbook tasks call, and the project's pinned Python packages.
FROM apache/airflow:3.3.2-python3.11

USER root
# mariadb-client: mariadb-dump / mariadb-binlog / mariadb for backups and restores; zstd: compression;
# openssh-client: service control over SSH. pkg-config, default-libmysqlclient-dev and build-essential
# let pip build mysqlclient when the pinned version differs from the one in the base image.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        mariadb-client zstd openssh-client \
        pkg-config default-libmysqlclient-dev build-essential \
    && apt-get autoremove -yqq --purge \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*

# Local backup root. A fresh named volume mounted here takes this owner and mode; the containers run
# as ${AIRFLOW_UID}:0, so group 0 with write and setgid keeps it writable whatever the UID.
RUN mkdir -p /backup && chown airflow:0 /backup && chmod 2775 /backup

USER airflow
COPY --chown=airflow:0 requirements.txt constraints.txt /opt/airflow/aiplatform-ops/
# Every install uses the frozen constraints, as Airflow recommends.
RUN pip install --no-cache-dir \
        -r /opt/airflow/aiplatform-ops/requirements.txt \
        -c /opt/airflow/aiplatform-ops/constraints.txt
