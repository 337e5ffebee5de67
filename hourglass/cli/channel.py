"""The gRPC channel of the client commands: to --server, with TLS and the token as asked."""

from __future__ import annotations

import argparse

import grpc


def open_channel(parser: argparse.ArgumentParser, args: argparse.Namespace) -> grpc.Channel:
    """A channel to --server: TLS with --tls-ca (and a client certificate for mutual TLS),
    the token sent with every call."""
    token_credentials = None
    if args.token:
        token_credentials = grpc.access_token_call_credentials(args.token)
    if args.tls_ca is None:
        if args.tls_cert or args.tls_key:
            parser.error("--tls-cert and --tls-key need --tls-ca")
        if token_credentials is None:
            return grpc.insecure_channel(args.server)
        # Tokens over plain TCP: allowed only to a local server (gRPC refuses otherwise).
        credentials = grpc.composite_channel_credentials(
            grpc.local_channel_credentials(), token_credentials
        )
        return grpc.secure_channel(args.server, credentials)
    try:
        channel_credentials = grpc.ssl_channel_credentials(
            root_certificates=args.tls_ca.read_bytes(),
            private_key=args.tls_key.read_bytes() if args.tls_key else None,
            certificate_chain=args.tls_cert.read_bytes() if args.tls_cert else None,
        )
    except OSError as exc:
        parser.error(f"cannot read a TLS file: {exc}")
    if token_credentials is not None:
        channel_credentials = grpc.composite_channel_credentials(
            channel_credentials, token_credentials
        )
    return grpc.secure_channel(args.server, channel_credentials)
