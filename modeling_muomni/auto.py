"""Registration of every MuOmni class with the transformers Auto classes.

transformers has no plugin mechanism: the Auto classes learn about `muomni_*` model types when
this runs (on `import muomni`), or through `auto_map` + `trust_remote_code` for exported
checkpoints. Registration is idempotent.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from muomni.configuration import MuOmniConfig, MuOmniTextConfig, MuOmniThinkerConfig

from .modeling_text import MuOmniForCausalLM, MuOmniTextModel

_registered = False


def register_auto_classes() -> None:
    global _registered
    if _registered:
        return
    for config_class in (MuOmniTextConfig, MuOmniThinkerConfig, MuOmniConfig):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    AutoModel.register(MuOmniTextConfig, MuOmniTextModel, exist_ok=True)
    AutoModelForCausalLM.register(MuOmniTextConfig, MuOmniForCausalLM, exist_ok=True)
    _registered = True
