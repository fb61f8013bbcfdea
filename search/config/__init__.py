"""The experiment file: one pydantic model, validated whole before Ray starts.

One private module per section (``_dataset``, ``_model``, ``_strategies``, ``_search``
for search, resources, targets and storage), the whole file and its cross-section
checks (``_experiment``), the one-line errors (``_errors``) and the loaders (``_load``).
"""

from search.config._errors import ConfigError, format_validation_error
from search.config._experiment import ExperimentConfig
from search.config._load import load_experiment, load_targets
from search.config._model import ModelConfig
from search.config._search import SearchConfig
from search.config._strategies import StrategyConfig

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "ModelConfig",
    "SearchConfig",
    "StrategyConfig",
    "format_validation_error",
    "load_experiment",
    "load_targets",
]
