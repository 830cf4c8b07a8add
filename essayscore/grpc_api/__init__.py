"""The gRPC transport of the scoring API (``essayscore.v1.EssayScore``, proto/essayscore/v1/essayscore.proto).

* :mod:`essayscore.grpc_api.server`: ``essayscore grpc-serve``, a ``grpc.aio`` server on
  :class:`essayscore.scoring_api.ScoringApi` (the object the HTTP service answers with) plus grpc.health.v1;
* :mod:`essayscore.grpc_api.client`: :class:`~essayscore.grpc_api.client.EssayScoreGrpcClient`, which returns the
  same pydantic models as the HTTP client (:mod:`essayscore.client`);
* :mod:`essayscore.grpc_api.convert`: dicts shaped like :mod:`essayscore.api_models` <-> the protobuf messages;
* ``_gen/``: the stubs ``scripts/gen_grpc.sh`` generates (committed, never edited by hand).
"""
