"""Training core: batch format, losses, optimizer (per-stage trainable sets), train state and the train step.

    from janus_jax.train import optim, state as state_lib, step as step_lib
    st = state_lib.create_train_state(cfg, config.optim, jax.random.PRNGKey(0))
    run = step_lib.compile_train_step(step_lib.make_train_step(cfg, config.train), shardings, batch_sh, mesh)
"""
from janus_jax.train.batch import check_batch, synthetic_batch
from janus_jax.train.optim import make_optimizer, stage_trainable
from janus_jax.train.state import (TrainState, abstract_state, create_sharded_train_state, create_train_state,
                                   state_shardings)
from janus_jax.train.step import batch_sharding, compile_train_step, make_train_step

__all__ = ["check_batch", "synthetic_batch", "make_optimizer", "stage_trainable", "TrainState", "abstract_state",
           "create_sharded_train_state", "create_train_state", "state_shardings", "batch_sharding",
           "compile_train_step", "make_train_step"]
