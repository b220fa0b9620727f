"""One recipient's context for ops/bench/fixtures/newsletter.mjml, shared by the benchmarks."""

from __future__ import annotations

from typing import Any


def recipient(i: int, address: str | None = None) -> dict[str, Any]:
    products = [
        {
            "name": f"Oak stool no. {i % 7}-{k}",
            "blurb": "Hand-finished oak, 45 cm, stackable.",
            "price": f"€{80 + k}",
            "was": f"€{110 + k}" if (i + k) % 2 else "",
            "image": f"https://cdn.example.com/p/{i % 50}-{k}.jpg",
            "url": f"https://www.example.com/p/{i % 50}-{k}",
        }
        for k in range(4)
    ]
    return {
        "brand": "Atelier", "first_name": f"Ana{i}", "campaign": "winter-24", "member_id": f"m-{i:06d}",
        "points": i % 900, "discount": 15, "offer_end": "31 January", "products": products,
        "show_referral": i % 3 == 0, "referral_code": f"ANA{i}", "email": address or f"ana{i}@example.com",
        "unsubscribe_url": f"https://example.com/u/{i:08x}",
    }
