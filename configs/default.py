"""Default: ProsPr at 98% sparsity on real Fashion-MNIST with a small BatchNorm ConvNet (CPU, minutes)."""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """Every field can be overridden on the command line as `--config.<field>=<value>`."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  # JAX's persistent compilation cache (prospr_jax.experiment.compile_cache): a directory, None
  # for $XDG_CACHE_HOME/prospr_jax/jax (or ~/.cache/prospr_jax/jax), '' to turn it off.
  config.compile_cache_dir = ml_collections.FieldReference(None, field_type=str)
  # Multi-process runs (one process per host, see the README): enabled=True calls
  # jax.distributed.initialize() with the fields below that are set; None: detected from the
  # environment (Cloud TPU, SLURM, Open MPI, ...).
  config.distributed = ml_collections.ConfigDict()
  config.distributed.enabled = False
  config.distributed.coordinator_address = ml_collections.FieldReference(None, field_type=str)
  config.distributed.num_processes = ml_collections.FieldReference(None, field_type=int)
  config.distributed.process_id = ml_collections.FieldReference(None, field_type=int)
  # GPU/TPU: the local device ids this process uses, e.g. (0, 1).
  config.distributed.local_device_ids = ml_collections.FieldReference(None, field_type=tuple)
  # Seconds a process waits for all the others to start (then it exits, naming the coordinator),
  # and without a heartbeat from one (killed, host down) before the others stop.
  config.distributed.initialization_timeout_s = 60
  config.distributed.heartbeat_timeout_s = 10
  # Data: a tfds name; 'fashion_mnist' reads Debian's dataset-fashion-mnist files offline.
  config.dataset = "fashion_mnist"
  config.data_dir = ml_collections.FieldReference(None, field_type=str)
  config.augment = True
  # Model: a name in prospr_jax.models.MODEL_NAMES.
  config.model = "small_convnet"

  config.prune = ml_collections.ConfigDict()
  # A name in prospr_jax.METHODS, or 'dense' for no pruning.
  config.prune.method = "prospr"
  config.prune.sparsity = 0.98
  config.prune.structured = False
  config.prune.allocation = "global"  # 'global', 'uniform' or 'erk'.
  config.prune.min_kept_per_layer = ml_collections.FieldReference(None, field_type=int)
  # Regexes of param paths never pruned (e.g. ('head',) keeps the classifier dense).
  config.prune.exclude = ()
  # BatchNorm while scoring: 'train' (batch statistics) or 'eval' (running statistics); None:
  # as the method's authors (prospr_jax.METHODS[method].batchnorm_mode; see docs/methods.md).
  config.prune.batchnorm_mode = ml_collections.FieldReference(None, field_type=str)
  config.prune.batch_size = 128  # global meta-batch size of the pruning step
  config.prune.num_batches = 1  # batches per score for SNIP, GraSP, iterative SNIP, FORCE
  # ProsPr: inner steps and inner optimizer (the authors' code: 3 steps of SGD lr 0.1).
  config.prune.num_steps = 3
  config.prune.inner_lr = 0.1
  config.prune.inner_momentum = 0.0
  config.prune.remat = False
  # ProsPr's inner loop: True (a Python loop unrolled at trace time), an int n >= 1 (a lax.scan
  # unrolling n steps per iteration) or None (by platform: prospr.default_unroll).
  config.prune.unroll = ml_collections.FieldReference(None, field_type=object)
  # Iterative SNIP / FORCE rounds (None: their default, 60); SynFlow rounds (its paper: 100).
  config.prune.num_rounds = ml_collections.FieldReference(None, field_type=int)
  config.prune.synflow_rounds = 100
  config.prune.synflow_float64 = True
  config.prune.grasp_temperature = 200.0
  # NTK-SAP (data-free; its authors' CIFAR script): rounds, weight re-draws per round, perturbation.
  config.prune.ntk_sap_rounds = 20
  config.prune.ntk_sap_samples = 5
  config.prune.ntk_sap_epsilon = 0.01
  # PX rounds (its authors' CIFAR-10 script); it scores on num_batches batches of batch_size.
  config.prune.px_rounds = 100
  # Sanity check (Frankle et al. 2021): None, 'shuffle' (permute the kept positions within each
  # layer), 'reinit' (train the mask from a fresh init) or 'invert' (keep each layer's
  # lowest-scored weights; one-shot methods). See prospr_jax.analysis.sanity.
  config.prune.sanity_check = ml_collections.FieldReference(None, field_type=str)

  config.train = ml_collections.ConfigDict()
  config.train.num_epochs = 3
  config.train.batch_size = 128  # global (over all processes); divisible by the device count
  config.train.eval_batch_size = 1000
  config.train.learning_rate = 0.1
  config.train.lr_schedule = "cosine"  # 'cosine' or 'step' (x0.1 at the decay_epochs fractions)
  config.train.lr_decay_fractions = (0.5, 0.75)
  config.train.momentum = 0.9
  config.train.weight_decay = 5e-4
  config.train.steps_per_epoch = -1  # -1: one pass over the training split
  config.train.log_every_steps = 100
  config.train.eval_every_epochs = 1  # test-split evaluation interval (and after the last epoch)
  config.train.checkpoint_every_steps = 500
  return config
