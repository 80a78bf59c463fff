"""``rpaccel bench embedding``: the embedding unit's dual-cache ablation and throughput limits
(:mod:`rpaccel.experiments.embedding`); ``--synth`` adds its synthesis in its own section."""

from ..experiments import combine
from ..experiments.embedding import run_embedding, run_embedding_synth
from .bench import Bench, finish
from .common import add_config_arguments, config_from_args, non_negative_int, say


def _arguments(p):
    add_config_arguments(p)
    p.add_argument("--lookups", type=int, default=48_000, help="measured lookups per exponent (default 48000)")
    p.add_argument("--warmup", type=int, default=16_000, help="lookups before measuring (default 16000)")
    p.add_argument("--tables", type=int, default=8, help="embedding tables (default 8)")
    p.add_argument("--rows", type=int, default=8192, help="rows per table (default 8192)")
    p.add_argument("--dim", type=int, help="embedding dimension (default: the configuration's max_emb_dim)")
    p.add_argument("--pooling", type=int, default=8, help="IDs per bag (default 8)")
    p.add_argument("--seed", type=non_negative_int, default=1, help="random seed (default 1)")
    p.add_argument("--drift", type=float, default=0.25,
                   help="share of the ranks whose IDs change between the profiled and the measured trace in the extra "
                        "stale-profile workload at Zipf 1.0 (default 0.25; 0 leaves that workload out)")
    p.add_argument("--synth", action="store_true",
                   help="also synthesise the unit and the block-RAM memory on the preset's target (tens of minutes) "
                        "into their own section")
    p.add_argument("--synth-only", action="store_true", help="only the synthesis (implies --synth)")
    p.add_argument("--pnr-timeout", type=float, default=None,
                   help="stop a synthesis build after this many seconds and report Yosys's cell counts without an "
                        "Fmax (default: no limit)")


def bench_embedding(args):
    config = config_from_args(args)
    reports = []
    if not args.synth_only:
        reports.append(run_embedding(config, lookups=args.lookups, warmup=args.warmup, tables=args.tables,
                                     rows=args.rows, dim=args.dim or config.max_emb_dim, pooling=args.pooling,
                                     seed=args.seed, drift=args.drift, progress=say))
    if args.synth or args.synth_only:
        reports.append(run_embedding_synth(config, pnr_timeout=args.pnr_timeout, progress=say))
    return finish(args, combine(*reports))


BENCH = Bench("embedding", "embedding unit: dual-cache ablation at equal on-chip bytes, throughput limits "
              "(Verilator); --synth adds ECP5 synthesis", _arguments, bench_embedding)
