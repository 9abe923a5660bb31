from taskmill.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RegisterWorkerRequest(_message.Message):
    __slots__ = ("address", "capacity", "hostname", "version", "handlers", "held", "concurrency", "queues")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    HANDLERS_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    QUEUES_FIELD_NUMBER: _ClassVar[int]
    address: str
    capacity: int
    hostname: str
    version: str
    handlers: _containers.RepeatedScalarFieldContainer[str]
    held: _containers.RepeatedCompositeFieldContainer[_common_pb2.HeldTask]
    concurrency: int
    queues: _containers.RepeatedCompositeFieldContainer[ServedQueue]
    def __init__(self, address: _Optional[str] = ..., capacity: _Optional[int] = ..., hostname: _Optional[str] = ..., version: _Optional[str] = ..., handlers: _Optional[_Iterable[str]] = ..., held: _Optional[_Iterable[_Union[_common_pb2.HeldTask, _Mapping]]] = ..., concurrency: _Optional[int] = ..., queues: _Optional[_Iterable[_Union[ServedQueue, _Mapping]]] = ...) -> None: ...

class ServedQueue(_message.Message):
    __slots__ = ("name", "weight")
    NAME_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    name: str
    weight: int
    def __init__(self, name: _Optional[str] = ..., weight: _Optional[int] = ...) -> None: ...

class RegisterWorkerResponse(_message.Message):
    __slots__ = ("worker_id", "heartbeat_interval_seconds", "lease_seconds", "stale_tokens")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LEASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STALE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    heartbeat_interval_seconds: float
    lease_seconds: float
    stale_tokens: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, worker_id: _Optional[str] = ..., heartbeat_interval_seconds: _Optional[float] = ..., lease_seconds: _Optional[float] = ..., stale_tokens: _Optional[_Iterable[int]] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("worker_id", "free_slots", "running_task_ids", "held")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    FREE_SLOTS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    free_slots: int
    running_task_ids: _containers.RepeatedScalarFieldContainer[str]
    held: _containers.RepeatedCompositeFieldContainer[_common_pb2.HeldTask]
    def __init__(self, worker_id: _Optional[str] = ..., free_slots: _Optional[int] = ..., running_task_ids: _Optional[_Iterable[str]] = ..., held: _Optional[_Iterable[_Union[_common_pb2.HeldTask, _Mapping]]] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("cancel_task_ids", "stale_tokens")
    CANCEL_TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    STALE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    cancel_task_ids: _containers.RepeatedScalarFieldContainer[str]
    stale_tokens: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, cancel_task_ids: _Optional[_Iterable[str]] = ..., stale_tokens: _Optional[_Iterable[int]] = ...) -> None: ...

class ReportTaskStatusesRequest(_message.Message):
    __slots__ = ("worker_id", "reports")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    REPORTS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    reports: _containers.RepeatedCompositeFieldContainer[_common_pb2.StatusReport]
    def __init__(self, worker_id: _Optional[str] = ..., reports: _Optional[_Iterable[_Union[_common_pb2.StatusReport, _Mapping]]] = ...) -> None: ...

class ReportTaskStatusesResponse(_message.Message):
    __slots__ = ("applied", "stale_tokens")
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    STALE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    applied: int
    stale_tokens: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, applied: _Optional[int] = ..., stale_tokens: _Optional[_Iterable[int]] = ...) -> None: ...

class RecordStartsRequest(_message.Message):
    __slots__ = ("worker_id", "tokens", "asked_task_ids", "asked_tokens")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    ASKED_TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    ASKED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    tokens: _containers.RepeatedScalarFieldContainer[int]
    asked_task_ids: _containers.RepeatedScalarFieldContainer[str]
    asked_tokens: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, worker_id: _Optional[str] = ..., tokens: _Optional[_Iterable[int]] = ..., asked_task_ids: _Optional[_Iterable[str]] = ..., asked_tokens: _Optional[_Iterable[int]] = ...) -> None: ...

class RecordStartsResponse(_message.Message):
    __slots__ = ("refused_tokens",)
    REFUSED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    refused_tokens: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, refused_tokens: _Optional[_Iterable[int]] = ...) -> None: ...

class DeregisterWorkerRequest(_message.Message):
    __slots__ = ("worker_id",)
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    def __init__(self, worker_id: _Optional[str] = ...) -> None: ...

class DeregisterWorkerResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
