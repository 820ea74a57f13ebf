"""Catalog operations: create vendors and products, set stock, and the demo catalog."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared import errors
from shared.db import catalog
from shared.db.pool import Database
from shared.types import JsonUuid

# Stored as PostgreSQL text, which cannot hold a NUL character: refused here, naming the field.
Text200 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=r"^[^\x00]*$")]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


class VendorIn(BaseModel):
    model_config = ConfigDict(strict=True)
    business_name: Text200
    platform_fee_bps: int = Field(default=1000, ge=0, le=10_000)


class ProductIn(BaseModel):
    model_config = ConfigDict(strict=True)
    vendor_id: JsonUuid
    name: Text200
    price_minor: int = Field(gt=0, le=10**12)
    currency: Currency = "NPR"
    stock: int = Field(ge=0, le=10**9)
    requires_verification: bool = False


class StockIn(BaseModel):
    model_config = ConfigDict(strict=True)
    on_hand: int = Field(ge=0, le=10**9)


def create_vendor(db: Database, vendor: VendorIn) -> dict[str, Any]:
    with db.transaction() as conn:
        vendor_id = catalog.insert_vendor(conn, business_name=vendor.business_name,
                                          platform_fee_bps=vendor.platform_fee_bps)
    return {"vendor_id": vendor_id}


def create_product(db: Database, product: ProductIn) -> dict[str, Any]:
    with db.transaction() as conn:
        if not catalog.vendor_exists(conn, product.vendor_id):
            raise errors.NotFound("No vendor with that id.", details={"vendor_id": str(product.vendor_id)})
        product_id = catalog.insert_product(
            conn, vendor_id=product.vendor_id, name=product.name, price_minor=product.price_minor,
            currency=product.currency, stock=product.stock, requires_verification=product.requires_verification,
        )
    return {"product_id": product_id}


def get_product(db: Database, product_id: uuid.UUID) -> dict[str, Any]:
    with db.connection() as conn:
        product = catalog.get_product(conn, product_id)
    if product is None:
        raise errors.NotFound("No product with that id.", details={"product_id": str(product_id)})
    return product


def set_stock(db: Database, product_id: uuid.UUID, stock: StockIn) -> dict[str, Any]:
    with db.transaction() as conn:
        if catalog.get_product(conn, product_id) is None:
            raise errors.NotFound("No product with that id.", details={"product_id": str(product_id)})
        if not catalog.set_stock(conn, product_id, stock.on_hand):
            reserved = catalog.reserved_units(conn, product_id)
            raise errors.Conflict(
                "Stock cannot go below the units reserved for unpaid intents.",
                details={"reserved": reserved, "requested_on_hand": stock.on_hand},
            )
        return catalog.get_product(conn, product_id)


# --- the demo catalog ------------------------------------------------------------------------------
# Fixed ids so `orderpipe demo` and the docs can name them; seeding twice changes nothing.

_DEMO_NAMESPACE = uuid.UUID("6f1c3a52-8f0e-4c39-9a53-0b6f5d0e7a11")


def demo_id(name: str) -> uuid.UUID:
    return uuid.uuid5(_DEMO_NAMESPACE, name)


DEMO_VENDORS = [
    ("Himalayan Tea House", 1000),
    ("Kathmandu Crafts", 800),
    ("Everest Gear", 1200),
]

# (vendor, product, price in paisa, stock, requires post-purchase verification)
DEMO_PRODUCTS = [
    ("Himalayan Tea House", "Ilam first-flush tea 250 g", 85_000, 500, False),
    ("Himalayan Tea House", "Masala chiya gift box", 120_000, 200, False),
    ("Kathmandu Crafts", "Lokta paper journal", 45_000, 300, False),
    ("Kathmandu Crafts", "Singing bowl, hand-hammered", 650_000, 40, False),
    ("Everest Gear", "Down jacket, 800 fill", 1_850_000, 60, False),
    ("Everest Gear", "Khukuri knife (ID check after purchase)", 950_000, 25, True),
]


def seed_demo(db: Database) -> dict[str, int]:
    """Create the demo vendors and products if they are missing."""
    created = {"vendors": 0, "products": 0}
    with db.transaction() as conn:
        for business_name, fee_bps in DEMO_VENDORS:
            if catalog.insert_vendor(conn, vendor_id=demo_id(business_name), business_name=business_name,
                                     platform_fee_bps=fee_bps):
                created["vendors"] += 1
        for vendor_name, name, price, stock, verify in DEMO_PRODUCTS:
            if catalog.insert_product(conn, product_id=demo_id(name), vendor_id=demo_id(vendor_name), name=name,
                                      price_minor=price, currency="NPR", stock=stock, requires_verification=verify):
                created["products"] += 1
    return created
