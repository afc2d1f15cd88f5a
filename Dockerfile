# The Plexus image: /usr/local/bin/plexus (the CNI plugin and, as `plexus install`, the node installer the Helm
# chart's DaemonSet runs), /usr/local/bin/plexus-daemon (thick mode) and /usr/local/bin/plexus-controller.
# Statically linked (musl), so the plexus binary the installer copies onto the host runs there whatever its C
# library; plexus is built by scripts/build-plexus-static, as for the tests and benchmarks: also not
# position-independent, since the runtime execs it for every CNI call and that way it starts without relocating itself
# (docs/benchmarks.md, "The plexus binary").
#
#   docker build -t plexus:0.1.0 .
#
# The node DaemonSet's installer runs as root (it writes the host's root-owned CNI dirs) with every capability
# dropped, thick mode's daemon privileged (it enters pods' network namespaces); the controller runs as the non-root
# user 65532 (the chart sets all three).

FROM rust:1-alpine AS build
RUN apk add --no-cache musl-dev bash
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p plexus-daemon --bin plexus-daemon -p plexus-controller --bin plexus-controller \
 && mkdir -p /out \
 && cp "$(scripts/build-plexus-static)" target/release/plexus-daemon target/release/plexus-controller /out/

FROM scratch
COPY --from=build /out/plexus /out/plexus-daemon /out/plexus-controller /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/plexus"]
