"""``rpaccel models``: the model zoo with its costs per ranked item."""

from ..results import format_table
from .common import CLIError, print_json
from .hostcommon import host_errors, positive_int


def register(subparsers):
    p = subparsers.add_parser("models", help="list the model zoo (RecPipe, DeepRecSys) with MACs and bytes per item",
                              description=__doc__)
    p.add_argument("names", nargs="*", help="models to show (default: all)")
    p.add_argument("--max-rows", type=positive_int, help="cap every table at this many rows (table bytes)")
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(func=run)


def run(args):
    from ..host.models import ZOO, get_model

    with host_errors():
        specs = [get_model(name, max_rows=args.max_rows) for name in (args.names or ZOO)]
    if not specs:
        raise CLIError("no models")
    if args.json:
        print_json([spec.describe() for spec in specs])
        return 0
    rows = [[s.name, s.interaction, s.dense, "-".join(map(str, s.bottom)) or "-", len(s.tables), s.emb_dim,
             s.pooling, "-".join(map(str, s.top)) + (f" + {s.tasks}x" + "-".join(map(str, s.tower)) if s.tasks else ""),
             s.macs_per_item(), s.embedding_bytes_per_item(), round(s.table_bytes() / 2**20, 1),
             "yes" if s.trainable else "cost only"] for s in specs]
    print(format_table(["model", "interaction", "dense", "bottom", "tables", "dim", "pooling", "top", "MACs/item",
                        "emb bytes/item (int8)", "tables MiB (int8)", "train/int8"], rows))
    return 0
