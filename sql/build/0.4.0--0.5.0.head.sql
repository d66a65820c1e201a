-- echovalue 0.4.0 -> 0.5.0: named webhooks with formats and custom templates (SPEC §12), and
-- the webhook test call, and the logs type filter (SPEC §14). A wallet's one webhook becomes its webhook `default`;
-- deliveries name the webhook they go to.
--
-- Layout: this head changes tables and data; sql/build/upgrade.py appends the functions that
-- are gone, new or changed, and the grants. tests/run.sh updates every earlier version and
-- compares the catalog with a fresh install.

alter table echovalue.webhooks
    add column name text not null default 'default',
    add column format text not null default '',
    add column template json,
    add column options jsonb not null default '{}'::jsonb,
    add column include_attachments boolean not null default true,
    add column mailbox text unique,
    add column created timestamptz not null default now();
update echovalue.webhooks set created = updated;
alter table echovalue.webhooks
    drop constraint webhooks_pkey,
    add primary key (wallet_id, name),
    add constraint webhooks_name_check check (name ~ '^[A-Za-z0-9_-]{1,30}$' and name <> 'call'),
    add constraint webhooks_format_check
        check (format in ('', 'slack', 'discord', 'teams', 'telegram', 'pagerduty', 'custom')),
    add constraint webhooks_template_check check ((format = 'custom') = (template is not null)),
    add constraint webhooks_mailbox_check check ((name = 'default') = (mailbox is null));

alter table echovalue.deliveries
    add column webhook text not null default 'default',
    add column kind text not null default 'mail',
    add column body text,
    alter column message_id drop not null,
    add constraint deliveries_kind_check check (
        (kind = 'mail' and message_id is not null and body is null)
        or (kind = 'test' and message_id is null and body is not null));

create index deliveries_test_idx on echovalue.deliveries (created) where kind = 'test';
create index logs_endpoint_idx on echovalue.logs (wallet_id, endpoint, id);

insert into echovalue.prices (operation, credits, endpoint) values
    ('webhook_show', 1, 'webhook'), ('webhook_put', 1, 'webhook'), ('webhook_patch', 1, 'webhook'),
    ('webhook_remove', 1, 'webhook'), ('webhook_test', 1, 'webhook')
on conflict (operation) do nothing;
