"""Per-recipient render time of a ~50 KB MJML newsletter: compile-once vs per-recipient MJML.

Run: ops/bench/render [--recipients N] [--smoke]. Each recipient gets its own context.
Prints medians in microseconds for both paths and their ratio; the last line is
RESULT ... for scripts. Timings are wall-clock on this machine; compare the
ratio across machines, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "ops" / "bench"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

import django  # noqa: E402

django.setup()

from newsletter_context import recipient  # noqa: E402

from templates_registry.rendering import VersionContent, compile_version, render_direct  # noqa: E402

FIXTURE = ROOT / "ops" / "bench" / "fixtures" / "newsletter.mjml"


def timed(render: Any, contexts: list[dict[str, Any]]) -> list[float]:
    samples = []
    for ctx in contexts:
        start = time.perf_counter()
        render(ctx)
        samples.append((time.perf_counter() - start) * 1e6)
    return samples


# ``--smoke``: the same two paths at a size that takes a second or two (CI runs it so the bench cannot rot).
SMOKE = {"recipients": 50, "direct_recipients": 3}


def args_parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help=f"seconds: {SMOKE} unless given; exits 1 if nothing was measured")
    parser.add_argument("--recipients", type=int, default=5000, help="recipients for the compile-once path")
    parser.add_argument("--direct-recipients", type=int, default=100, help="recipients for the slow per-recipient path")
    if parser.parse_known_args()[0].smoke:
        parser.set_defaults(**SMOKE)  # explicit options still win
    return parser.parse_args()


def main() -> int:
    args = args_parse()
    source = FIXTURE.read_text(encoding="utf-8")
    content = VersionContent(
        mjml_body=source, subject="{{ first_name }}, the winter edit is here", sender_name="Atelier",
        preheader="{{ discount }}% off until {{ offer_end }}", variables=recipient(0),
    )
    start = time.perf_counter()
    compiled = compile_version(content)
    compile_ms = (time.perf_counter() - start) * 1000
    sample = compiled.render(recipient(0))

    contexts = [recipient(i) for i in range(args.recipients)]
    compiled.render(contexts[0])  # warm-up
    once = timed(compiled.render, contexts)
    direct = timed(lambda ctx: render_direct(content, ctx), contexts[: args.direct_recipients])
    if len(once) < 2 or not direct or not sample.html or not sample.text:
        print("FAILED: nothing was measured (need at least 2 and 1 recipients, and a rendered HTML and text part)", file=sys.stderr)
        return 1

    once_median, direct_median = statistics.median(once), statistics.median(direct)
    p95 = statistics.quantiles(once, n=20)[-1]
    print(f"template: {len(source.encode()) / 1024:.1f} KB MJML -> {len(sample.html.encode()) / 1024:.1f} KB HTML "
          f"+ {len(sample.text.encode()) / 1024:.1f} KB text")
    print(f"compile once (MJML + Jinja compile): {compile_ms:.1f} ms")
    print(f"compile-once path: median {once_median:.1f} us, p95 {p95:.1f} us over {len(once)} recipients "
          "(subject, sender, preheader, HTML and text)")
    print(f"per-recipient MJML path: median {direct_median:.1f} us over {len(direct)} recipients")
    print(f"RESULT recipients={len(once)} compile_once_us={once_median:.1f} per_recipient_us={direct_median:.1f} "
          f"speedup={direct_median / once_median:.0f}x bar_us=50 ok={'yes' if once_median < 50 else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
