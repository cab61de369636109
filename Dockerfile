# The kvfleet image the Kubernetes manifests (deploy/k8s) run: the one binary on Debian 12.
#   docker build -t kvfleet:latest .
#   docker run --rm -p 8000:8000 kvfleet:latest serve --host 0.0.0.0 --port 8000
# Stage 1 builds with the repository's own scripts (scripts/setup installs the Debian packages,
# scripts/build compiles); stage 2 keeps the binary and the shared libraries it loads. The build
# is for the cpu (and sim) engine backends: no CUDA toolkit is installed here.
FROM debian:12 AS build
ENV DEBIAN_FRONTEND=noninteractive
WORKDIR /src
# The package list first, so that a source change does not reinstall the packages.
COPY scripts/setup scripts/setup
RUN scripts/setup && rm -rf /var/lib/apt/lists/*
COPY . .
# Only the binary: tests are built and run by scripts/test, not in the image.
RUN KVFLEET_BUILD_DIR=/build scripts/build -DKVFLEET_CUDA=OFF -DKVFLEET_NCCL=OFF -DBUILD_TESTING=OFF \
 && strip /build/kvfleet

FROM debian:12-slim
ENV DEBIAN_FRONTEND=noninteractive
# The runtime halves of the -dev packages the build links (ldd build/kvfleet), and curl for
# health checks by hand.
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends \
      libopenblas0-pthread libprometheus-cpp-core1.0 libucx0 libyaml-cpp0.7 \
      libpcre2-8-0 libicu72 \
      ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /build/kvfleet /usr/local/bin/kvfleet
# An unprivileged user; the servers need no root.
RUN useradd --system --uid 10001 --no-create-home kvfleet
USER kvfleet
EXPOSE 8000 9000
ENTRYPOINT ["kvfleet"]
CMD ["--help"]
