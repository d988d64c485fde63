from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrainEvalPipelineConfig(_message.Message):
    __slots__ = ("model", "train_config", "train_input_reader", "eval_config", "eval_input_reader", "graph_rewriter")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TRAIN_CONFIG_FIELD_NUMBER: _ClassVar[int]
    TRAIN_INPUT_READER_FIELD_NUMBER: _ClassVar[int]
    EVAL_CONFIG_FIELD_NUMBER: _ClassVar[int]
    EVAL_INPUT_READER_FIELD_NUMBER: _ClassVar[int]
    GRAPH_REWRITER_FIELD_NUMBER: _ClassVar[int]
    model: DetectionModel
    train_config: TrainConfig
    train_input_reader: InputReader
    eval_config: EvalConfig
    eval_input_reader: _containers.RepeatedCompositeFieldContainer[InputReader]
    graph_rewriter: GraphRewriter
    def __init__(self, model: _Optional[_Union[DetectionModel, _Mapping]] = ..., train_config: _Optional[_Union[TrainConfig, _Mapping]] = ..., train_input_reader: _Optional[_Union[InputReader, _Mapping]] = ..., eval_config: _Optional[_Union[EvalConfig, _Mapping]] = ..., eval_input_reader: _Optional[_Iterable[_Union[InputReader, _Mapping]]] = ..., graph_rewriter: _Optional[_Union[GraphRewriter, _Mapping]] = ...) -> None: ...

class DetectionModel(_message.Message):
    __slots__ = ("faster_rcnn", "ssd", "experimental_model", "center_net")
    FASTER_RCNN_FIELD_NUMBER: _ClassVar[int]
    SSD_FIELD_NUMBER: _ClassVar[int]
    EXPERIMENTAL_MODEL_FIELD_NUMBER: _ClassVar[int]
    CENTER_NET_FIELD_NUMBER: _ClassVar[int]
    faster_rcnn: FasterRcnn
    ssd: Ssd
    experimental_model: ExperimentalModel
    center_net: CenterNet
    def __init__(self, faster_rcnn: _Optional[_Union[FasterRcnn, _Mapping]] = ..., ssd: _Optional[_Union[Ssd, _Mapping]] = ..., experimental_model: _Optional[_Union[ExperimentalModel, _Mapping]] = ..., center_net: _Optional[_Union[CenterNet, _Mapping]] = ...) -> None: ...

class ExperimentalModel(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class FasterRcnn(_message.Message):
    __slots__ = ("num_classes", "image_resizer", "feature_extractor", "second_stage_box_predictor")
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_RESIZER_FIELD_NUMBER: _ClassVar[int]
    FEATURE_EXTRACTOR_FIELD_NUMBER: _ClassVar[int]
    SECOND_STAGE_BOX_PREDICTOR_FIELD_NUMBER: _ClassVar[int]
    num_classes: int
    image_resizer: ImageResizer
    feature_extractor: FasterRcnnFeatureExtractor
    second_stage_box_predictor: BoxPredictor
    def __init__(self, num_classes: _Optional[int] = ..., image_resizer: _Optional[_Union[ImageResizer, _Mapping]] = ..., feature_extractor: _Optional[_Union[FasterRcnnFeatureExtractor, _Mapping]] = ..., second_stage_box_predictor: _Optional[_Union[BoxPredictor, _Mapping]] = ...) -> None: ...

class BoxPredictor(_message.Message):
    __slots__ = ("mask_rcnn_box_predictor",)
    MASK_RCNN_BOX_PREDICTOR_FIELD_NUMBER: _ClassVar[int]
    mask_rcnn_box_predictor: MaskRCNNBoxPredictor
    def __init__(self, mask_rcnn_box_predictor: _Optional[_Union[MaskRCNNBoxPredictor, _Mapping]] = ...) -> None: ...

class MaskRCNNBoxPredictor(_message.Message):
    __slots__ = ("predict_instance_masks",)
    PREDICT_INSTANCE_MASKS_FIELD_NUMBER: _ClassVar[int]
    predict_instance_masks: bool
    def __init__(self, predict_instance_masks: _Optional[bool] = ...) -> None: ...

class FasterRcnnFeatureExtractor(_message.Message):
    __slots__ = ("type",)
    TYPE_FIELD_NUMBER: _ClassVar[int]
    type: str
    def __init__(self, type: _Optional[str] = ...) -> None: ...

class CenterNet(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Ssd(_message.Message):
    __slots__ = ("num_classes", "image_resizer", "feature_extractor", "anchor_generator")
    NUM_CLASSES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_RESIZER_FIELD_NUMBER: _ClassVar[int]
    FEATURE_EXTRACTOR_FIELD_NUMBER: _ClassVar[int]
    ANCHOR_GENERATOR_FIELD_NUMBER: _ClassVar[int]
    num_classes: int
    image_resizer: ImageResizer
    feature_extractor: SsdFeatureExtractor
    anchor_generator: AnchorGenerator
    def __init__(self, num_classes: _Optional[int] = ..., image_resizer: _Optional[_Union[ImageResizer, _Mapping]] = ..., feature_extractor: _Optional[_Union[SsdFeatureExtractor, _Mapping]] = ..., anchor_generator: _Optional[_Union[AnchorGenerator, _Mapping]] = ...) -> None: ...

class SsdFeatureExtractor(_message.Message):
    __slots__ = ("type", "depth_multiplier", "min_depth", "use_depthwise", "fpn", "bifpn")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DEPTH_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    MIN_DEPTH_FIELD_NUMBER: _ClassVar[int]
    USE_DEPTHWISE_FIELD_NUMBER: _ClassVar[int]
    FPN_FIELD_NUMBER: _ClassVar[int]
    BIFPN_FIELD_NUMBER: _ClassVar[int]
    type: str
    depth_multiplier: float
    min_depth: int
    use_depthwise: bool
    fpn: FeaturePyramidNetworks
    bifpn: BidirectionalFeaturePyramidNetworks
    def __init__(self, type: _Optional[str] = ..., depth_multiplier: _Optional[float] = ..., min_depth: _Optional[int] = ..., use_depthwise: _Optional[bool] = ..., fpn: _Optional[_Union[FeaturePyramidNetworks, _Mapping]] = ..., bifpn: _Optional[_Union[BidirectionalFeaturePyramidNetworks, _Mapping]] = ...) -> None: ...

class FeaturePyramidNetworks(_message.Message):
    __slots__ = ("min_level", "max_level", "additional_layer_depth")
    MIN_LEVEL_FIELD_NUMBER: _ClassVar[int]
    MAX_LEVEL_FIELD_NUMBER: _ClassVar[int]
    ADDITIONAL_LAYER_DEPTH_FIELD_NUMBER: _ClassVar[int]
    min_level: int
    max_level: int
    additional_layer_depth: int
    def __init__(self, min_level: _Optional[int] = ..., max_level: _Optional[int] = ..., additional_layer_depth: _Optional[int] = ...) -> None: ...

class BidirectionalFeaturePyramidNetworks(_message.Message):
    __slots__ = ("min_level", "max_level", "num_iterations", "num_filters")
    MIN_LEVEL_FIELD_NUMBER: _ClassVar[int]
    MAX_LEVEL_FIELD_NUMBER: _ClassVar[int]
    NUM_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    NUM_FILTERS_FIELD_NUMBER: _ClassVar[int]
    min_level: int
    max_level: int
    num_iterations: int
    num_filters: int
    def __init__(self, min_level: _Optional[int] = ..., max_level: _Optional[int] = ..., num_iterations: _Optional[int] = ..., num_filters: _Optional[int] = ...) -> None: ...

class ImageResizer(_message.Message):
    __slots__ = ("keep_aspect_ratio_resizer", "fixed_shape_resizer")
    KEEP_ASPECT_RATIO_RESIZER_FIELD_NUMBER: _ClassVar[int]
    FIXED_SHAPE_RESIZER_FIELD_NUMBER: _ClassVar[int]
    keep_aspect_ratio_resizer: KeepAspectRatioResizer
    fixed_shape_resizer: FixedShapeResizer
    def __init__(self, keep_aspect_ratio_resizer: _Optional[_Union[KeepAspectRatioResizer, _Mapping]] = ..., fixed_shape_resizer: _Optional[_Union[FixedShapeResizer, _Mapping]] = ...) -> None: ...

class KeepAspectRatioResizer(_message.Message):
    __slots__ = ("min_dimension", "max_dimension", "pad_to_max_dimension")
    MIN_DIMENSION_FIELD_NUMBER: _ClassVar[int]
    MAX_DIMENSION_FIELD_NUMBER: _ClassVar[int]
    PAD_TO_MAX_DIMENSION_FIELD_NUMBER: _ClassVar[int]
    min_dimension: int
    max_dimension: int
    pad_to_max_dimension: bool
    def __init__(self, min_dimension: _Optional[int] = ..., max_dimension: _Optional[int] = ..., pad_to_max_dimension: _Optional[bool] = ...) -> None: ...

class FixedShapeResizer(_message.Message):
    __slots__ = ("height", "width")
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    height: int
    width: int
    def __init__(self, height: _Optional[int] = ..., width: _Optional[int] = ...) -> None: ...

class AnchorGenerator(_message.Message):
    __slots__ = ("ssd_anchor_generator", "multiscale_anchor_generator")
    SSD_ANCHOR_GENERATOR_FIELD_NUMBER: _ClassVar[int]
    MULTISCALE_ANCHOR_GENERATOR_FIELD_NUMBER: _ClassVar[int]
    ssd_anchor_generator: SsdAnchorGenerator
    multiscale_anchor_generator: MultiscaleAnchorGenerator
    def __init__(self, ssd_anchor_generator: _Optional[_Union[SsdAnchorGenerator, _Mapping]] = ..., multiscale_anchor_generator: _Optional[_Union[MultiscaleAnchorGenerator, _Mapping]] = ...) -> None: ...

class SsdAnchorGenerator(_message.Message):
    __slots__ = ("num_layers", "min_scale", "max_scale", "aspect_ratios")
    NUM_LAYERS_FIELD_NUMBER: _ClassVar[int]
    MIN_SCALE_FIELD_NUMBER: _ClassVar[int]
    MAX_SCALE_FIELD_NUMBER: _ClassVar[int]
    ASPECT_RATIOS_FIELD_NUMBER: _ClassVar[int]
    num_layers: int
    min_scale: float
    max_scale: float
    aspect_ratios: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, num_layers: _Optional[int] = ..., min_scale: _Optional[float] = ..., max_scale: _Optional[float] = ..., aspect_ratios: _Optional[_Iterable[float]] = ...) -> None: ...

class MultiscaleAnchorGenerator(_message.Message):
    __slots__ = ("min_level", "max_level", "anchor_scale", "aspect_ratios", "scales_per_octave")
    MIN_LEVEL_FIELD_NUMBER: _ClassVar[int]
    MAX_LEVEL_FIELD_NUMBER: _ClassVar[int]
    ANCHOR_SCALE_FIELD_NUMBER: _ClassVar[int]
    ASPECT_RATIOS_FIELD_NUMBER: _ClassVar[int]
    SCALES_PER_OCTAVE_FIELD_NUMBER: _ClassVar[int]
    min_level: int
    max_level: int
    anchor_scale: float
    aspect_ratios: _containers.RepeatedScalarFieldContainer[float]
    scales_per_octave: int
    def __init__(self, min_level: _Optional[int] = ..., max_level: _Optional[int] = ..., anchor_scale: _Optional[float] = ..., aspect_ratios: _Optional[_Iterable[float]] = ..., scales_per_octave: _Optional[int] = ...) -> None: ...

class TrainConfig(_message.Message):
    __slots__ = ("batch_size", "data_augmentation_options", "optimizer", "fine_tune_checkpoint", "from_detection_checkpoint", "num_steps", "fine_tune_checkpoint_type")
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    DATA_AUGMENTATION_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    FINE_TUNE_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    FROM_DETECTION_CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    NUM_STEPS_FIELD_NUMBER: _ClassVar[int]
    FINE_TUNE_CHECKPOINT_TYPE_FIELD_NUMBER: _ClassVar[int]
    batch_size: int
    data_augmentation_options: _containers.RepeatedCompositeFieldContainer[PreprocessingStep]
    optimizer: Optimizer
    fine_tune_checkpoint: str
    from_detection_checkpoint: bool
    num_steps: int
    fine_tune_checkpoint_type: str
    def __init__(self, batch_size: _Optional[int] = ..., data_augmentation_options: _Optional[_Iterable[_Union[PreprocessingStep, _Mapping]]] = ..., optimizer: _Optional[_Union[Optimizer, _Mapping]] = ..., fine_tune_checkpoint: _Optional[str] = ..., from_detection_checkpoint: _Optional[bool] = ..., num_steps: _Optional[int] = ..., fine_tune_checkpoint_type: _Optional[str] = ...) -> None: ...

class PreprocessingStep(_message.Message):
    __slots__ = ("random_horizontal_flip", "random_image_scale")
    RANDOM_HORIZONTAL_FLIP_FIELD_NUMBER: _ClassVar[int]
    RANDOM_IMAGE_SCALE_FIELD_NUMBER: _ClassVar[int]
    random_horizontal_flip: RandomHorizontalFlip
    random_image_scale: RandomImageScale
    def __init__(self, random_horizontal_flip: _Optional[_Union[RandomHorizontalFlip, _Mapping]] = ..., random_image_scale: _Optional[_Union[RandomImageScale, _Mapping]] = ...) -> None: ...

class RandomHorizontalFlip(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RandomImageScale(_message.Message):
    __slots__ = ("min_scale_ratio", "max_scale_ratio")
    MIN_SCALE_RATIO_FIELD_NUMBER: _ClassVar[int]
    MAX_SCALE_RATIO_FIELD_NUMBER: _ClassVar[int]
    min_scale_ratio: float
    max_scale_ratio: float
    def __init__(self, min_scale_ratio: _Optional[float] = ..., max_scale_ratio: _Optional[float] = ...) -> None: ...

class Optimizer(_message.Message):
    __slots__ = ("rms_prop_optimizer", "momentum_optimizer", "adam_optimizer", "use_moving_average", "moving_average_decay")
    RMS_PROP_OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    ADAM_OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    USE_MOVING_AVERAGE_FIELD_NUMBER: _ClassVar[int]
    MOVING_AVERAGE_DECAY_FIELD_NUMBER: _ClassVar[int]
    rms_prop_optimizer: RMSPropOptimizer
    momentum_optimizer: MomentumOptimizer
    adam_optimizer: AdamOptimizer
    use_moving_average: bool
    moving_average_decay: float
    def __init__(self, rms_prop_optimizer: _Optional[_Union[RMSPropOptimizer, _Mapping]] = ..., momentum_optimizer: _Optional[_Union[MomentumOptimizer, _Mapping]] = ..., adam_optimizer: _Optional[_Union[AdamOptimizer, _Mapping]] = ..., use_moving_average: _Optional[bool] = ..., moving_average_decay: _Optional[float] = ...) -> None: ...

class RMSPropOptimizer(_message.Message):
    __slots__ = ("learning_rate", "momentum_optimizer_value", "decay", "epsilon")
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_OPTIMIZER_VALUE_FIELD_NUMBER: _ClassVar[int]
    DECAY_FIELD_NUMBER: _ClassVar[int]
    EPSILON_FIELD_NUMBER: _ClassVar[int]
    learning_rate: LearningRate
    momentum_optimizer_value: float
    decay: float
    epsilon: float
    def __init__(self, learning_rate: _Optional[_Union[LearningRate, _Mapping]] = ..., momentum_optimizer_value: _Optional[float] = ..., decay: _Optional[float] = ..., epsilon: _Optional[float] = ...) -> None: ...

class MomentumOptimizer(_message.Message):
    __slots__ = ("learning_rate", "momentum_optimizer_value")
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_OPTIMIZER_VALUE_FIELD_NUMBER: _ClassVar[int]
    learning_rate: LearningRate
    momentum_optimizer_value: float
    def __init__(self, learning_rate: _Optional[_Union[LearningRate, _Mapping]] = ..., momentum_optimizer_value: _Optional[float] = ...) -> None: ...

class AdamOptimizer(_message.Message):
    __slots__ = ("learning_rate",)
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    learning_rate: LearningRate
    def __init__(self, learning_rate: _Optional[_Union[LearningRate, _Mapping]] = ...) -> None: ...

class LearningRate(_message.Message):
    __slots__ = ("constant_learning_rate", "exponential_decay_learning_rate", "manual_step_learning_rate", "cosine_decay_learning_rate")
    CONSTANT_LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    EXPONENTIAL_DECAY_LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    MANUAL_STEP_LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    COSINE_DECAY_LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    constant_learning_rate: ConstantLearningRate
    exponential_decay_learning_rate: ExponentialDecayLearningRate
    manual_step_learning_rate: ManualStepLearningRate
    cosine_decay_learning_rate: CosineDecayLearningRate
    def __init__(self, constant_learning_rate: _Optional[_Union[ConstantLearningRate, _Mapping]] = ..., exponential_decay_learning_rate: _Optional[_Union[ExponentialDecayLearningRate, _Mapping]] = ..., manual_step_learning_rate: _Optional[_Union[ManualStepLearningRate, _Mapping]] = ..., cosine_decay_learning_rate: _Optional[_Union[CosineDecayLearningRate, _Mapping]] = ...) -> None: ...

class ConstantLearningRate(_message.Message):
    __slots__ = ("learning_rate",)
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    learning_rate: float
    def __init__(self, learning_rate: _Optional[float] = ...) -> None: ...

class ExponentialDecayLearningRate(_message.Message):
    __slots__ = ("initial_learning_rate", "decay_steps", "decay_factor", "staircase")
    INITIAL_LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    DECAY_STEPS_FIELD_NUMBER: _ClassVar[int]
    DECAY_FACTOR_FIELD_NUMBER: _ClassVar[int]
    STAIRCASE_FIELD_NUMBER: _ClassVar[int]
    initial_learning_rate: float
    decay_steps: int
    decay_factor: float
    staircase: bool
    def __init__(self, initial_learning_rate: _Optional[float] = ..., decay_steps: _Optional[int] = ..., decay_factor: _Optional[float] = ..., staircase: _Optional[bool] = ...) -> None: ...

class ManualStepLearningRate(_message.Message):
    __slots__ = ("initial_learning_rate", "schedule", "warmup")
    class LearningRateSchedule(_message.Message):
        __slots__ = ("step", "learning_rate")
        STEP_FIELD_NUMBER: _ClassVar[int]
        LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
        step: int
        learning_rate: float
        def __init__(self, step: _Optional[int] = ..., learning_rate: _Optional[float] = ...) -> None: ...
    INITIAL_LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    WARMUP_FIELD_NUMBER: _ClassVar[int]
    initial_learning_rate: float
    schedule: _containers.RepeatedCompositeFieldContainer[ManualStepLearningRate.LearningRateSchedule]
    warmup: bool
    def __init__(self, initial_learning_rate: _Optional[float] = ..., schedule: _Optional[_Iterable[_Union[ManualStepLearningRate.LearningRateSchedule, _Mapping]]] = ..., warmup: _Optional[bool] = ...) -> None: ...

class CosineDecayLearningRate(_message.Message):
    __slots__ = ("learning_rate_base", "total_steps", "warmup_learning_rate", "warmup_steps", "hold_base_rate_steps")
    LEARNING_RATE_BASE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    WARMUP_LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    WARMUP_STEPS_FIELD_NUMBER: _ClassVar[int]
    HOLD_BASE_RATE_STEPS_FIELD_NUMBER: _ClassVar[int]
    learning_rate_base: float
    total_steps: int
    warmup_learning_rate: float
    warmup_steps: int
    hold_base_rate_steps: int
    def __init__(self, learning_rate_base: _Optional[float] = ..., total_steps: _Optional[int] = ..., warmup_learning_rate: _Optional[float] = ..., warmup_steps: _Optional[int] = ..., hold_base_rate_steps: _Optional[int] = ...) -> None: ...

class InputReader(_message.Message):
    __slots__ = ("label_map_path", "tf_record_input_reader")
    LABEL_MAP_PATH_FIELD_NUMBER: _ClassVar[int]
    TF_RECORD_INPUT_READER_FIELD_NUMBER: _ClassVar[int]
    label_map_path: str
    tf_record_input_reader: TFRecordInputReader
    def __init__(self, label_map_path: _Optional[str] = ..., tf_record_input_reader: _Optional[_Union[TFRecordInputReader, _Mapping]] = ...) -> None: ...

class TFRecordInputReader(_message.Message):
    __slots__ = ("input_path",)
    INPUT_PATH_FIELD_NUMBER: _ClassVar[int]
    input_path: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, input_path: _Optional[_Iterable[str]] = ...) -> None: ...

class EvalConfig(_message.Message):
    __slots__ = ("batch_size", "num_examples", "metrics_set")
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    NUM_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    METRICS_SET_FIELD_NUMBER: _ClassVar[int]
    batch_size: int
    num_examples: int
    metrics_set: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, batch_size: _Optional[int] = ..., num_examples: _Optional[int] = ..., metrics_set: _Optional[_Iterable[str]] = ...) -> None: ...

class GraphRewriter(_message.Message):
    __slots__ = ("quantization",)
    QUANTIZATION_FIELD_NUMBER: _ClassVar[int]
    quantization: Quantization
    def __init__(self, quantization: _Optional[_Union[Quantization, _Mapping]] = ...) -> None: ...

class Quantization(_message.Message):
    __slots__ = ("delay", "weight_bits", "activation_bits", "symmetric")
    DELAY_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_BITS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_BITS_FIELD_NUMBER: _ClassVar[int]
    SYMMETRIC_FIELD_NUMBER: _ClassVar[int]
    delay: int
    weight_bits: int
    activation_bits: int
    symmetric: bool
    def __init__(self, delay: _Optional[int] = ..., weight_bits: _Optional[int] = ..., activation_bits: _Optional[int] = ..., symmetric: _Optional[bool] = ...) -> None: ...
