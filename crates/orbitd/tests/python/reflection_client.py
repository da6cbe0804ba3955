"""A gRPC client that is not ours (Python grpcio), with no .proto files: it finds Orbit's
services through server reflection, checks grpc.health.v1, and calls
orbit.admin.v1.Admin/ListParkedCalls built from the reflected descriptors, over mutual TLS.

Usage: reflection_client.py HOST:PORT CA CERT KEY
Prints one JSON object: {"services": [...], "health": "SERVING", "parked": {...}}.
"""
import json
import sys

import grpc
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def unary(channel, pool, service, method, request):
    m = pool.FindServiceByName(service).FindMethodByName(method)
    req_cls = message_factory.GetMessageClass(m.input_type)
    resp_cls = message_factory.GetMessageClass(m.output_type)
    call = channel.unary_unary(
        f"/{service}/{method}",
        request_serializer=req_cls.SerializeToString,
        response_deserializer=resp_cls.FromString,
    )
    req = req_cls()
    json_format.ParseDict(request, req)
    return call(req, timeout=10)


def main():
    target, ca, cert, key = sys.argv[1:5]
    read = lambda p: open(p, "rb").read()
    creds = grpc.ssl_channel_credentials(read(ca), read(key), read(cert))
    with grpc.secure_channel(target, creds) as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        services = sorted(db.get_services())
        pool = DescriptorPool(db)
        health = unary(channel, pool, "grpc.health.v1.Health", "Check", {})
        status = pool.FindMessageTypeByName(
            "grpc.health.v1.HealthCheckResponse"
        ).fields_by_name["status"].enum_type.values_by_number[health.status].name
        parked = unary(channel, pool, "orbit.admin.v1.Admin", "ListParkedCalls", {})
        print(
            json.dumps(
                {
                    "services": services,
                    "health": status,
                    "parked": json_format.MessageToDict(parked),
                }
            )
        )


if __name__ == "__main__":
    main()
