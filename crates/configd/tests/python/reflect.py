"""What grpcurl does, with Python's grpcio-reflection and grpcio-health-checking: list the
services through server reflection (no token needed) and ask grpc.health.v1.

usage: reflect.py PORT   -> prints {"services": [...], "health": "SERVING"}
"""
import json
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

channel = grpc.insecure_channel(f"127.0.0.1:{sys.argv[1]}")
stub = reflection_pb2_grpc.ServerReflectionStub(channel)
replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
services = [s.name for r in replies for s in r.list_services_response.service]
health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
print(json.dumps({"services": sorted(services), "health": health_pb2.HealthCheckResponse.ServingStatus.Name(health.status)}))
