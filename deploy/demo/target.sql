-- Demo target database: the new schema the shop moves to. Deliberately not
-- the source schema: renamed tables and columns, split names, enum values
-- remapped to codes, money in cents, soft deletes. Idempotent.
CREATE SCHEMA IF NOT EXISTS crm;
CREATE SCHEMA IF NOT EXISTS catalog;
CREATE SCHEMA IF NOT EXISTS sales;

CREATE TABLE IF NOT EXISTS crm.customer (
  customer_id   bigint PRIMARY KEY,
  email         text NOT NULL,
  first_name    text NOT NULL,
  last_name     text,
  country_code  char(2),
  tier_code     char(1) NOT NULL,
  tags          text[],
  newsletter    boolean,
  signed_up_at  timestamptz NOT NULL,
  is_deleted    boolean NOT NULL DEFAULT false,
  deleted_at    timestamptz
);

-- One source table into several target tables: personal data kept apart.
CREATE TABLE IF NOT EXISTS crm.customer_pii (
  customer_id   bigint PRIMARY KEY REFERENCES crm.customer (customer_id),
  email_sha256  text NOT NULL,
  email_masked  text NOT NULL
);

CREATE TABLE IF NOT EXISTS catalog.product (
  sku           varchar(64) PRIMARY KEY,
  title         varchar(120) NOT NULL,
  description   text,
  price_cents   bigint NOT NULL CHECK (price_cents >= 0),
  weight_kg     numeric(10,3),
  image         bytea,
  source_system text NOT NULL
);

CREATE TABLE IF NOT EXISTS sales."order" (
  order_id      bigint PRIMARY KEY,
  customer_id   bigint NOT NULL,
  status        text NOT NULL,
  placed_at_utc timestamp NOT NULL,
  total         numeric(14,2),
  note          text
);

CREATE TABLE IF NOT EXISTS sales.order_line (
  order_id      bigint NOT NULL,
  line_no       integer NOT NULL,
  line_ref      text NOT NULL,
  sku           varchar(64) NOT NULL,
  quantity      integer NOT NULL CHECK (quantity > 0),
  unit_price    numeric(12,2) NOT NULL,
  PRIMARY KEY (order_id, line_no)
);
