# The Plexus image: /usr/local/bin/plexus (the CNI plugin and, as `plexus install`, the node installer the Helm
# chart's DaemonSet runs), /usr/local/bin/plexus-shim (thick mode's CNI plugin, which the installer copies beside
# plexus), /usr/local/bin/plexus-daemon (thick mode) and /usr/local/bin/plexus-controller.
#
#   docker build -t plexus:0.1.0 .
#
# The binaries are built by scripts/build-image-binaries, the same script scripts/test runs for the tests (the real
# nodes run its plexus and plexus-shim, the chart test installs an image made of its four binaries), on Debian 12 as
# the test machine is: plexus and plexus-shim statically linked against glibc (the installer copies it onto hosts whatever their C library; it
# takes its command line from the C `main`'s argv, which works with any C library), plexus-daemon and
# plexus-controller against Debian 12's glibc, which the runtime base provides. Both bases are pinned by digest.
#
# The node DaemonSet's installer runs as root (it writes the host's root-owned CNI dirs) with every capability
# dropped, thick mode's daemon privileged (it enters pods' network namespaces); the controller runs as the non-root
# user 65532 (the chart sets all three).

# rust:1.95-bookworm
FROM rust:1.95-bookworm@sha256:6258907abe69656e41cd992e0b705cdcfabcbbe3db374f92ed2d47121282d4a1 AS build
WORKDIR /src
COPY . .
RUN scripts/build-image-binaries /out

# gcr.io/distroless/cc-debian12:nonroot (glibc, libgcc; no shell)
FROM gcr.io/distroless/cc-debian12:nonroot@sha256:9dac0a79194e45a7da0158a9c6da57b217585af0786db3845d1f0ec1a0dd182f
COPY --from=build /out/plexus /out/plexus-shim /out/plexus-daemon /out/plexus-controller /usr/local/bin/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/plexus"]
