-- The declared schema of orderpipe, whole. Keep it equal to what the migrations produce:
-- tests/integration/test_migrations.py applies both to fresh databases and compares them.


-- ---------------------------------------------------------------------------------------------
-- catalog
-- ---------------------------------------------------------------------------------------------
CREATE TABLE vendors (
    vendor_id        uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    business_name    text NOT NULL CHECK (length(business_name) BETWEEN 1 AND 200),
    platform_fee_bps integer NOT NULL DEFAULT 1000 CHECK (platform_fee_bps BETWEEN 0 AND 10000),
    created_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE products (
    product_id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    vendor_id             uuid NOT NULL REFERENCES vendors (vendor_id),
    name                  text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    price_minor           bigint NOT NULL CHECK (price_minor > 0),
    currency              text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    requires_verification boolean NOT NULL DEFAULT false,
    active                boolean NOT NULL DEFAULT true,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX products_vendor ON products (vendor_id);

-- One row per product. `reserved` counts units held for unpaid intents; `on_hand` counts units in stock.
CREATE TABLE inventory (
    product_id uuid PRIMARY KEY REFERENCES products (product_id),
    on_hand    integer NOT NULL CHECK (on_hand >= 0),
    reserved   integer NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT inventory_reserved_within_stock CHECK (reserved <= on_hand)
);

-- ---------------------------------------------------------------------------------------------
-- carts
-- ---------------------------------------------------------------------------------------------
CREATE TABLE carts (
    cart_id     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    customer_id text NOT NULL CHECK (length(customer_id) BETWEEN 1 AND 200),
    currency    text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    status      text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'ordered')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE cart_items (
    cart_id          uuid NOT NULL REFERENCES carts (cart_id) ON DELETE CASCADE,
    line_no          integer NOT NULL CHECK (line_no >= 1),
    product_id       uuid NOT NULL REFERENCES products (product_id),
    quantity         integer NOT NULL CHECK (quantity BETWEEN 1 AND 100),
    unit_price_minor bigint NOT NULL CHECK (unit_price_minor > 0),
    PRIMARY KEY (cart_id, product_id),
    UNIQUE (cart_id, line_no)
);

-- ---------------------------------------------------------------------------------------------
-- payment intents: the money side. Status moves forward only through shared/flows.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE payment_intents (
    payment_intent_id  text PRIMARY KEY CHECK (payment_intent_id ~ '^opi_[0-9a-f]{32}$'),
    cart_id            uuid NOT NULL REFERENCES carts (cart_id),
    customer_id        text NOT NULL,
    provider           text NOT NULL CHECK (provider IN ('esewa', 'khalti', 'stripe')),
    amount_minor       bigint NOT NULL CHECK (amount_minor > 0),
    currency           text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    status             text NOT NULL DEFAULT 'awaiting_payment' CHECK (status IN (
                           'awaiting_payment', 'verifying', 'paid', 'order_created',
                           'needs_review', 'needs_refund', 'expired', 'failed', 'cancelled')),
    status_reason      text,
    -- the gateway's handle for this payment: eSewa transaction_uuid, Khalti pidx, Stripe PaymentIntent id
    external_reference text,
    gateway            jsonb NOT NULL DEFAULT '{}'::jsonb,
    success_url        text,
    failure_url        text,
    expires_at         timestamptz NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    paid_at            timestamptz,
    -- when reconcile last asked the gateway about this intent (stragglers are polled, not hammered)
    last_checked_at    timestamptz,
    UNIQUE (provider, external_reference)
);
CREATE INDEX payment_intents_status ON payment_intents (status, updated_at);
CREATE INDEX payment_intents_cart ON payment_intents (cart_id);

-- The price snapshot taken when the intent was created: the order is made from these, never from the catalog.
CREATE TABLE payment_intent_items (
    payment_intent_id text NOT NULL REFERENCES payment_intents (payment_intent_id),
    line_no           integer NOT NULL CHECK (line_no >= 1),
    product_id        uuid NOT NULL REFERENCES products (product_id),
    vendor_id         uuid NOT NULL REFERENCES vendors (vendor_id),
    product_name      text NOT NULL,
    quantity          integer NOT NULL CHECK (quantity BETWEEN 1 AND 100),
    unit_price_minor  bigint NOT NULL CHECK (unit_price_minor > 0),
    PRIMARY KEY (payment_intent_id, product_id),
    UNIQUE (payment_intent_id, line_no)
);

-- Units held for an intent. All lines of an intent are taken in one transaction or none are.
CREATE TABLE reservations (
    payment_intent_id text NOT NULL REFERENCES payment_intents (payment_intent_id),
    product_id        uuid NOT NULL REFERENCES inventory (product_id),
    quantity          integer NOT NULL CHECK (quantity BETWEEN 1 AND 100),
    status            text NOT NULL DEFAULT 'held' CHECK (status IN ('held', 'committed', 'released')),
    expires_at        timestamptz NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (payment_intent_id, product_id)
);
CREATE INDEX reservations_held_expiry ON reservations (expires_at) WHERE status = 'held';

-- One verification per gateway transaction, and one per intent.
CREATE TABLE verifications (
    verification_id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    payment_intent_id       text NOT NULL UNIQUE REFERENCES payment_intents (payment_intent_id),
    provider                text NOT NULL CHECK (provider IN ('esewa', 'khalti', 'stripe')),
    external_transaction_id text NOT NULL CHECK (length(external_transaction_id) BETWEEN 1 AND 200),
    amount_minor            bigint NOT NULL CHECK (amount_minor > 0),
    currency                text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    source                  text NOT NULL CHECK (source IN ('verify_payment', 'webhook', 'reconcile')),
    gateway_response        jsonb NOT NULL DEFAULT '{}'::jsonb,
    verified_at             timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider, external_transaction_id)
);

-- Answers the gateways gave that did not verify a payment (mismatches, refusals), kept for the operator.
CREATE TABLE payment_attempts (
    attempt_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payment_intent_id text NOT NULL REFERENCES payment_intents (payment_intent_id),
    outcome           text NOT NULL CHECK (outcome IN ('pending', 'failed', 'amount_mismatch', 'invalid_signature')),
    detail            jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_attempts_intent ON payment_attempts (payment_intent_id, created_at);

-- ---------------------------------------------------------------------------------------------
-- webhooks: stored before any processing, unique per provider and event id.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE webhook_events (
    webhook_event_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    provider         text NOT NULL CHECK (length(provider) BETWEEN 1 AND 100),
    event_id         text NOT NULL CHECK (length(event_id) BETWEEN 1 AND 255),
    event_type       text NOT NULL,
    payload          jsonb NOT NULL,
    received_at      timestamptz NOT NULL DEFAULT now(),
    processed_at     timestamptz,
    outcome          text,
    UNIQUE (provider, event_id)
);

-- ---------------------------------------------------------------------------------------------
-- orders
-- ---------------------------------------------------------------------------------------------
CREATE SEQUENCE order_number_seq;

CREATE TABLE orders (
    order_id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    order_number      text NOT NULL UNIQUE,
    payment_intent_id text NOT NULL UNIQUE REFERENCES payment_intents (payment_intent_id),
    customer_id       text NOT NULL,
    status            text NOT NULL DEFAULT 'confirmed' CHECK (status IN ('confirmed', 'cancelled')),
    total_minor       bigint NOT NULL CHECK (total_minor > 0),
    currency          text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    cancelled_at      timestamptz,
    cancel_reason     text,
    CONSTRAINT orders_cancelled_has_time CHECK ((status = 'cancelled') = (cancelled_at IS NOT NULL))
);
CREATE INDEX orders_created ON orders (created_at);

CREATE TABLE order_items (
    order_id           uuid NOT NULL REFERENCES orders (order_id),
    line_no            integer NOT NULL CHECK (line_no >= 1),
    product_id         uuid NOT NULL REFERENCES products (product_id),
    vendor_id          uuid NOT NULL REFERENCES vendors (vendor_id),
    product_name       text NOT NULL,
    quantity           integer NOT NULL CHECK (quantity BETWEEN 1 AND 100),
    unit_price_minor   bigint NOT NULL CHECK (unit_price_minor > 0),
    -- the vendor's fee when the order was made: metrics recomputed later give the same fees
    platform_fee_bps   integer NOT NULL CHECK (platform_fee_bps BETWEEN 0 AND 10000),
    fulfillment_status text NOT NULL DEFAULT 'pending' CHECK (fulfillment_status IN (
                           'pending', 'processing', 'shipped', 'delivered', 'returned', 'refunded')),
    PRIMARY KEY (order_id, product_id),
    UNIQUE (order_id, line_no)
);
CREATE INDEX order_items_vendor ON order_items (vendor_id);

-- An order without items cannot commit: checked at commit time, after the items were inserted.
CREATE FUNCTION order_must_have_items() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    checked_order uuid;
BEGIN
    IF TG_TABLE_NAME = 'orders' THEN
        checked_order := NEW.order_id;
    ELSE
        checked_order := OLD.order_id;
    END IF;
    IF EXISTS (SELECT 1 FROM orders WHERE order_id = checked_order)
       AND NOT EXISTS (SELECT 1 FROM order_items WHERE order_id = checked_order) THEN
        RAISE EXCEPTION 'order % has no items', checked_order
            USING ERRCODE = 'check_violation', CONSTRAINT = 'order_has_items';
    END IF;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER order_has_items_on_insert
    AFTER INSERT ON orders DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION order_must_have_items();
CREATE CONSTRAINT TRIGGER order_has_items_on_item_delete
    AFTER DELETE ON order_items DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION order_must_have_items();

-- Post-purchase identity verification for orders holding a product that requires it.
CREATE TABLE verification_sessions (
    session_id      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    order_id        uuid NOT NULL UNIQUE REFERENCES orders (order_id),
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'declined', 'expired')),
    deadline_at     timestamptz NOT NULL,
    deadline_job_id bigint,
    decided_at      timestamptz,
    decided_by      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT verification_sessions_decided CHECK ((status = 'pending') = (decided_at IS NULL))
);

-- Refunds reported by gateways (Stripe charge.refunded), attributed to vendors for metrics.
CREATE TABLE refunds (
    refund_id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    payment_intent_id  text NOT NULL REFERENCES payment_intents (payment_intent_id),
    provider           text NOT NULL,
    external_refund_id text NOT NULL,
    amount_minor       bigint NOT NULL CHECK (amount_minor > 0),
    currency           text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    refunded_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider, external_refund_id)
);
CREATE INDEX refunds_refunded_at ON refunds (refunded_at);
CREATE INDEX refunds_intent ON refunds (payment_intent_id);

CREATE TABLE refund_allocations (
    refund_id    uuid NOT NULL REFERENCES refunds (refund_id),
    vendor_id    uuid NOT NULL REFERENCES vendors (vendor_id),
    amount_minor bigint NOT NULL CHECK (amount_minor >= 0),
    PRIMARY KEY (refund_id, vendor_id)
);

-- ---------------------------------------------------------------------------------------------
-- jobs: PostgreSQL is the record, the task queue is the doorbell.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE jobs (
    job_id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind                text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_]{0,62}$'),
    queue               text NOT NULL DEFAULT 'orders' CHECK (queue IN ('orders', 'timers')),
    payload             jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- coalescing key: at most one waiting job per key (see jobs_waiting_key)
    key                 text,
    status              text NOT NULL DEFAULT 'pending' CHECK (status IN (
                            'pending', 'running', 'completed', 'retryable', 'dead', 'cancelled')),
    attempts            integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts        integer NOT NULL DEFAULT 12 CHECK (max_attempts >= 1),
    run_at              timestamptz NOT NULL DEFAULT now(),
    locked_until        timestamptz,
    locked_by           text,
    last_error          text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    started_at          timestamptz,
    completed_at        timestamptz,
    failed_at           timestamptz,
    cancelled_at        timestamptz,
    -- hand-off to the task queue: a generation is one task; a new generation is a new task name
    dispatch_generation integer NOT NULL DEFAULT 0 CHECK (dispatch_generation >= 0),
    dispatched_at       timestamptz,
    -- local dispatcher bookkeeping, mirroring what Cloud Tasks keeps for a task
    delivery_attempts   integer NOT NULL DEFAULT 0 CHECK (delivery_attempts >= 0),
    next_delivery_at    timestamptz,
    CONSTRAINT jobs_running_is_leased CHECK (status <> 'running' OR (locked_until IS NOT NULL AND locked_by IS NOT NULL)),
    CONSTRAINT jobs_completed_has_time CHECK (status <> 'completed' OR completed_at IS NOT NULL),
    CONSTRAINT jobs_dead_has_error CHECK (status <> 'dead' OR last_error IS NOT NULL)
);

CREATE UNIQUE INDEX jobs_waiting_key ON jobs (key) WHERE key IS NOT NULL AND status IN ('pending', 'retryable');
CREATE INDEX jobs_due ON jobs (run_at) WHERE status IN ('pending', 'retryable');
CREATE INDEX jobs_leases ON jobs (locked_until) WHERE status = 'running';
CREATE INDEX jobs_listing ON jobs (status, kind, job_id DESC);
CREATE INDEX jobs_kind_listing ON jobs (kind, job_id DESC);
CREATE INDEX jobs_finished ON jobs (completed_at) WHERE status IN ('completed', 'cancelled');

-- ---------------------------------------------------------------------------------------------
-- metrics: recomputed from source rows, a row for every vendor and day (zeros included).
-- ---------------------------------------------------------------------------------------------
CREATE TABLE vendor_daily (
    vendor_id           uuid NOT NULL REFERENCES vendors (vendor_id),
    day                 date NOT NULL,
    orders              integer NOT NULL DEFAULT 0 CHECK (orders >= 0),
    gmv_minor           bigint NOT NULL DEFAULT 0 CHECK (gmv_minor >= 0),
    refunds_minor       bigint NOT NULL DEFAULT 0 CHECK (refunds_minor >= 0),
    platform_fees_minor bigint NOT NULL DEFAULT 0 CHECK (platform_fees_minor >= 0),
    payouts_minor       bigint NOT NULL DEFAULT 0,
    computed_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (vendor_id, day)
);
CREATE INDEX vendor_daily_day ON vendor_daily (day);

CREATE TABLE platform_daily (
    day                 date PRIMARY KEY,
    orders              integer NOT NULL DEFAULT 0 CHECK (orders >= 0),
    gmv_minor           bigint NOT NULL DEFAULT 0 CHECK (gmv_minor >= 0),
    refunds_minor       bigint NOT NULL DEFAULT 0 CHECK (refunds_minor >= 0),
    platform_fees_minor bigint NOT NULL DEFAULT 0 CHECK (platform_fees_minor >= 0),
    computed_at         timestamptz NOT NULL DEFAULT now()
);

-- Payouts to vendors (settled amounts); pending payout = earned minus paid out.
CREATE TABLE vendor_payouts (
    payout_id    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    vendor_id    uuid NOT NULL REFERENCES vendors (vendor_id),
    amount_minor bigint NOT NULL CHECK (amount_minor > 0),
    currency     text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    paid_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX vendor_payouts_vendor ON vendor_payouts (vendor_id, paid_at);

-- ---------------------------------------------------------------------------------------------
-- idempotent HTTP replays (Idempotency-Key): the first answer, kept and returned again.
-- ---------------------------------------------------------------------------------------------
CREATE TABLE idempotency_keys (
    scope         text NOT NULL,
    key           text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_hash  text NOT NULL,
    response_code integer,
    response_body jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
