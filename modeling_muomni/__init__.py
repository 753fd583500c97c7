"""MuOmni: a tiny Thinker-Talker omni model for the Hugging Face ecosystem.

`import muomni` exposes the public classes and registers them with the transformers Auto
classes, so `AutoConfig`, `AutoModel`, `AutoModelForCausalLM`, `AutoTokenizer` and `pipeline()`
load MuOmni checkpoints by their `model_type`.
"""

from .version import __version__
from muomni.configuration import (
    PRESETS,
    MuOmniConfig,
    MuOmniTextConfig,
    MuOmniThinkerConfig,
    get_preset,
    get_preset_config,
)
from .modeling_text import (
    MuOmniForCausalLM,
    MuOmniPreTrainedModel,
    MuOmniTextModel,
)
from .auto import register_auto_classes

register_auto_classes()

__all__ = [
    "__version__",
    "PRESETS",
    "MuOmniConfig",
    "MuOmniTextConfig",
    "MuOmniThinkerConfig",
    "MuOmniForCausalLM",
    "MuOmniPreTrainedModel",
    "MuOmniTextModel",
    "get_preset",
    "get_preset_config",
    "register_auto_classes",
]
