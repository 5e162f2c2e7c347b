"""optax_suite: Keras 3 optimizers as pure, composable optax transformations.

One factory per Keras 3 optimizer (:func:`adam`, :func:`sgd`,
:func:`adamw`, :func:`muon`, ... fourteen in all, plus
:func:`multi_optimizer`) takes Keras's arguments and gives Keras's numbers;
every feature they chain (clipping, decoupled weight decay, accumulation,
the parameter EMA, loss scaling, lazy rows) is also public on its own.
"""

from optax_suite import schedules
from optax_suite._factories.adadelta import adadelta
from optax_suite._factories.adafactor import adafactor
from optax_suite._factories.adagrad import adagrad
from optax_suite._factories.adam import adam
from optax_suite._factories.adamax import adamax
from optax_suite._factories.adamw import adamw
from optax_suite._factories.ftrl import ftrl
from optax_suite._factories.lamb import lamb
from optax_suite._factories.lion import lion
from optax_suite._factories.muon import muon
from optax_suite._factories.nadam import nadam
from optax_suite._factories.rmsprop import rmsprop
from optax_suite._factories.schedule_free_adamw import schedule_free_adamw
from optax_suite._factories.sgd import sgd
from optax_suite._interop.checkpoint import migrate_state
from optax_suite._interop.config import from_config
from optax_suite._interop.config import get_config
from optax_suite._interop.hyperparameters import hyperparameters
from optax_suite._interop.keras_export import state_to_keras
from optax_suite._interop.keras_state import from_keras
from optax_suite._interop.keras_state import state_from_keras
from optax_suite._optimizer import keras_optimizer
from optax_suite._optimizer import KerasOptimizer
from optax_suite._optimizer import KerasOptimizerState
from optax_suite._options.accumulation import accumulate_gradients
from optax_suite._options.accumulation import AccumulationState
from optax_suite._options.apply import apply
from optax_suite._options.apply import apply_updates
from optax_suite._options.clipping import clip_by_global_norm
from optax_suite._options.clipping import clip_by_norm
from optax_suite._options.clipping import clip_by_value
from optax_suite._options.clipping import global_norm
from optax_suite._options.ema import ema
from optax_suite._options.ema import EmaState
from optax_suite._options.ema import finalize_variable_values
from optax_suite._options.sparse import accumulate_rows
from optax_suite._options.sparse import lazy_rows
from optax_suite._options.sparse import RowAccumulationState
from optax_suite._options.weight_decay import add_decoupled_weight_decay
from optax_suite._options.weight_decay import decay_mask
from optax_suite._options.weight_decay import DecoupledWeightDecayState
from optax_suite._rules.adadelta import scale_by_adadelta
from optax_suite._rules.adadelta import ScaleByAdadeltaState
from optax_suite._rules.adafactor import scale_by_adafactor
from optax_suite._rules.adafactor import ScaleByAdafactorState
from optax_suite._rules.adagrad import scale_by_adagrad
from optax_suite._rules.adagrad import ScaleByAdagradState
from optax_suite._rules.adam import scale_by_adam
from optax_suite._rules.adam import ScaleByAdamState
from optax_suite._rules.adamax import scale_by_adamax
from optax_suite._rules.adamax import ScaleByAdamaxState
from optax_suite._rules.ftrl import scale_by_ftrl
from optax_suite._rules.ftrl import ScaleByFtrlState
from optax_suite._rules.lamb import scale_by_lamb
from optax_suite._rules.lamb import ScaleByLambState
from optax_suite._rules.lion import scale_by_lion
from optax_suite._rules.lion import ScaleByLionState
from optax_suite._rules.muon import scale_by_muon
from optax_suite._rules.muon import ScaleByMuonState
from optax_suite._rules.nadam import scale_by_nadam
from optax_suite._rules.nadam import ScaleByNadamState
from optax_suite._rules.rmsprop import scale_by_rmsprop
from optax_suite._rules.rmsprop import ScaleByRmspropState
from optax_suite._rules.schedule_free_adamw import scale_by_schedule_free_adamw
from optax_suite._rules.schedule_free_adamw import ScaleByScheduleFreeAdamwState
from optax_suite._rules.schedule_free_adamw import schedule_free_eval_params
from optax_suite._rules.sgd import scale_by_sgd
from optax_suite._rules.sgd import ScaleBySgdState
from optax_suite._wrappers.inject import inject_hyperparams
from optax_suite._wrappers.loss_scale import all_finite
from optax_suite._wrappers.loss_scale import DynamicLossScale
from optax_suite._wrappers.loss_scale import loss_scale_optimizer
from optax_suite._wrappers.loss_scale import LossScaleState
from optax_suite._wrappers.loss_scale import scale_loss
from optax_suite._wrappers.multi_optimizer import multi_optimizer
from optax_suite._wrappers.multi_optimizer import MultiOptimizerState
from optax_suite._wrappers.multi_optimizer import OptimizerMap

__version__ = "0.2.0"

__all__ = (
    "AccumulationState",
    "DecoupledWeightDecayState",
    "DynamicLossScale",
    "EmaState",
    "KerasOptimizer",
    "KerasOptimizerState",
    "LossScaleState",
    "MultiOptimizerState",
    "OptimizerMap",
    "RowAccumulationState",
    "ScaleByAdadeltaState",
    "ScaleByAdafactorState",
    "ScaleByAdagradState",
    "ScaleByAdamState",
    "ScaleByAdamaxState",
    "ScaleByFtrlState",
    "ScaleByLambState",
    "ScaleByLionState",
    "ScaleByMuonState",
    "ScaleByNadamState",
    "ScaleByRmspropState",
    "ScaleByScheduleFreeAdamwState",
    "ScaleBySgdState",
    "accumulate_gradients",
    "accumulate_rows",
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "add_decoupled_weight_decay",
    "all_finite",
    "apply",
    "apply_updates",
    "clip_by_global_norm",
    "clip_by_norm",
    "clip_by_value",
    "decay_mask",
    "ema",
    "finalize_variable_values",
    "from_config",
    "from_keras",
    "ftrl",
    "get_config",
    "global_norm",
    "hyperparameters",
    "inject_hyperparams",
    "keras_optimizer",
    "lamb",
    "lazy_rows",
    "lion",
    "loss_scale_optimizer",
    "migrate_state",
    "multi_optimizer",
    "muon",
    "nadam",
    "rmsprop",
    "scale_by_adadelta",
    "scale_by_adafactor",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_ftrl",
    "scale_by_lamb",
    "scale_by_lion",
    "scale_by_muon",
    "scale_by_nadam",
    "scale_by_rmsprop",
    "scale_by_schedule_free_adamw",
    "scale_by_sgd",
    "scale_loss",
    "schedule_free_adamw",
    "schedule_free_eval_params",
    "schedules",
    "sgd",
    "state_from_keras",
    "state_to_keras",
)
