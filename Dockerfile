# The one image of docker-compose.yml: Debian 12 with what `./setup.sh install` installs (the
# Debian packages, requirements.lock, segmentation/assistant/requirements.lock and
# portal/frontend/package-lock.json), the same recipe as on a machine of its own.
# Build it beside docker-compose.yml: docker build -t northanc .
FROM debian:12

WORKDIR /srv/northanc
COPY . .
RUN ./setup.sh install && rm -rf /var/lib/apt/lists/* /root/.cache/pip /root/.npm

# Each service runs its own command (docker-compose.yml); `nora` is the command line inside.
ENV PATH=/srv/northanc/.venv/bin:$PATH
CMD ["nora", "--help"]
