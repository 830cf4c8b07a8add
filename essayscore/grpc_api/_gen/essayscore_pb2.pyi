from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ScoreRequest(_message.Message):
    __slots__ = ("essay", "prompt", "essay_id", "explain", "include_issues")
    ESSAY_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    ESSAY_ID_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_ISSUES_FIELD_NUMBER: _ClassVar[int]
    essay: str
    prompt: str
    essay_id: str
    explain: bool
    include_issues: bool
    def __init__(self, essay: _Optional[str] = ..., prompt: _Optional[str] = ..., essay_id: _Optional[str] = ..., explain: bool = ..., include_issues: bool = ...) -> None: ...

class BatchRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[ScoreRequest]
    def __init__(self, items: _Optional[_Iterable[_Union[ScoreRequest, _Mapping]]] = ...) -> None: ...

class MetadataRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ErrorDetail(_message.Message):
    __slots__ = ("code", "message", "field")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    field: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., field: _Optional[str] = ...) -> None: ...

class BandInterval(_message.Message):
    __slots__ = ("low", "high", "level")
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    low: float
    high: float
    level: float
    def __init__(self, low: _Optional[float] = ..., high: _Optional[float] = ..., level: _Optional[float] = ...) -> None: ...

class CefrProbabilities(_message.Message):
    __slots__ = ("A1", "A2", "B1", "B2", "C1", "C2")
    A1_FIELD_NUMBER: _ClassVar[int]
    A2_FIELD_NUMBER: _ClassVar[int]
    B1_FIELD_NUMBER: _ClassVar[int]
    B2_FIELD_NUMBER: _ClassVar[int]
    C1_FIELD_NUMBER: _ClassVar[int]
    C2_FIELD_NUMBER: _ClassVar[int]
    A1: float
    A2: float
    B1: float
    B2: float
    C1: float
    C2: float
    def __init__(self, A1: _Optional[float] = ..., A2: _Optional[float] = ..., B1: _Optional[float] = ..., B2: _Optional[float] = ..., C1: _Optional[float] = ..., C2: _Optional[float] = ...) -> None: ...

class Issue(_message.Message):
    __slots__ = ("offset", "length", "category", "message", "suggestions", "rule_id")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SUGGESTIONS_FIELD_NUMBER: _ClassVar[int]
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    offset: int
    length: int
    category: str
    message: str
    suggestions: _containers.RepeatedScalarFieldContainer[str]
    rule_id: str
    def __init__(self, offset: _Optional[int] = ..., length: _Optional[int] = ..., category: _Optional[str] = ..., message: _Optional[str] = ..., suggestions: _Optional[_Iterable[str]] = ..., rule_id: _Optional[str] = ...) -> None: ...

class IssueList(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Issue]
    def __init__(self, items: _Optional[_Iterable[_Union[Issue, _Mapping]]] = ...) -> None: ...

class WarningItem(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class TopFeature(_message.Message):
    __slots__ = ("name", "description", "group", "value", "contribution", "direction")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    group: str
    value: float
    contribution: float
    direction: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., group: _Optional[str] = ..., value: _Optional[float] = ..., contribution: _Optional[float] = ..., direction: _Optional[str] = ...) -> None: ...

class Explanation(_message.Message):
    __slots__ = ("base_value", "output", "length_adjustment", "top_features", "groups")
    class GroupsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    BASE_VALUE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    LENGTH_ADJUSTMENT_FIELD_NUMBER: _ClassVar[int]
    TOP_FEATURES_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    base_value: float
    output: float
    length_adjustment: float
    top_features: _containers.RepeatedCompositeFieldContainer[TopFeature]
    groups: _containers.ScalarMap[str, float]
    def __init__(self, base_value: _Optional[float] = ..., output: _Optional[float] = ..., length_adjustment: _Optional[float] = ..., top_features: _Optional[_Iterable[_Union[TopFeature, _Mapping]]] = ..., groups: _Optional[_Mapping[str, float]] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("essay_id", "ielts_band", "ielts_band_label", "ielts_raw", "band_interval", "cefr", "cefr_probabilities", "length_adjustment", "explanation", "issues", "warnings", "model_version", "runtime", "timings")
    class TimingsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ESSAY_ID_FIELD_NUMBER: _ClassVar[int]
    IELTS_BAND_FIELD_NUMBER: _ClassVar[int]
    IELTS_BAND_LABEL_FIELD_NUMBER: _ClassVar[int]
    IELTS_RAW_FIELD_NUMBER: _ClassVar[int]
    BAND_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    CEFR_FIELD_NUMBER: _ClassVar[int]
    CEFR_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    LENGTH_ADJUSTMENT_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    ISSUES_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    essay_id: str
    ielts_band: float
    ielts_band_label: str
    ielts_raw: float
    band_interval: BandInterval
    cefr: str
    cefr_probabilities: CefrProbabilities
    length_adjustment: float
    explanation: Explanation
    issues: IssueList
    warnings: _containers.RepeatedCompositeFieldContainer[WarningItem]
    model_version: str
    runtime: str
    timings: _containers.ScalarMap[str, float]
    def __init__(self, essay_id: _Optional[str] = ..., ielts_band: _Optional[float] = ..., ielts_band_label: _Optional[str] = ..., ielts_raw: _Optional[float] = ..., band_interval: _Optional[_Union[BandInterval, _Mapping]] = ..., cefr: _Optional[str] = ..., cefr_probabilities: _Optional[_Union[CefrProbabilities, _Mapping]] = ..., length_adjustment: _Optional[float] = ..., explanation: _Optional[_Union[Explanation, _Mapping]] = ..., issues: _Optional[_Union[IssueList, _Mapping]] = ..., warnings: _Optional[_Iterable[_Union[WarningItem, _Mapping]]] = ..., model_version: _Optional[str] = ..., runtime: _Optional[str] = ..., timings: _Optional[_Mapping[str, float]] = ...) -> None: ...

class BatchResult(_message.Message):
    __slots__ = ("ok", "result", "error")
    OK_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    result: ScoreResponse
    error: ErrorDetail
    def __init__(self, ok: bool = ..., result: _Optional[_Union[ScoreResponse, _Mapping]] = ..., error: _Optional[_Union[ErrorDetail, _Mapping]] = ...) -> None: ...

class BatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[BatchResult]
    def __init__(self, results: _Optional[_Iterable[_Union[BatchResult, _Mapping]]] = ...) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_essay_chars", "max_prompt_chars", "max_batch_size", "max_body_bytes", "min_words_warning")
    MAX_ESSAY_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_PROMPT_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_BODY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MIN_WORDS_WARNING_FIELD_NUMBER: _ClassVar[int]
    max_essay_chars: int
    max_prompt_chars: int
    max_batch_size: int
    max_body_bytes: int
    min_words_warning: int
    def __init__(self, max_essay_chars: _Optional[int] = ..., max_prompt_chars: _Optional[int] = ..., max_batch_size: _Optional[int] = ..., max_body_bytes: _Optional[int] = ..., min_words_warning: _Optional[int] = ...) -> None: ...

class MetadataResponse(_message.Message):
    __slots__ = ("model_version", "runtime", "encoder", "metrics", "feature_registry", "interval_level", "limits", "training_sources", "licence")
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    ENCODER_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    FEATURE_REGISTRY_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_LEVEL_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    TRAINING_SOURCES_FIELD_NUMBER: _ClassVar[int]
    LICENCE_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    runtime: str
    encoder: _struct_pb2.Struct
    metrics: _struct_pb2.Struct
    feature_registry: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Struct]
    interval_level: float
    limits: Limits
    training_sources: _containers.RepeatedCompositeFieldContainer[_struct_pb2.Struct]
    licence: str
    def __init__(self, model_version: _Optional[str] = ..., runtime: _Optional[str] = ..., encoder: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., metrics: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., feature_registry: _Optional[_Iterable[_Union[_struct_pb2.Struct, _Mapping]]] = ..., interval_level: _Optional[float] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ..., training_sources: _Optional[_Iterable[_Union[_struct_pb2.Struct, _Mapping]]] = ..., licence: _Optional[str] = ...) -> None: ...
