-- echovalue 0.4.0 -> 0.5.0: named webhooks with formats and custom templates (SPEC §12), the
-- webhook test call, scheduled webhooks (SPEC §13) and the logs type filter (SPEC §14). A wallet's one webhook becomes its webhook `default`;
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
    add column created timestamptz not null default now(),
    add column cron text,
    add column timezone text,
    add column active boolean not null default true,
    add column next_run_at timestamptz,
    add column last_run_at timestamptz,
    add column last_status text,
    add column last_error text;
update echovalue.webhooks set created = updated;
alter table echovalue.webhooks
    drop constraint webhooks_pkey,
    add primary key (wallet_id, name),
    add constraint webhooks_name_check check (name ~ '^[A-Za-z0-9_-]{1,30}$' and name <> 'call'),
    add constraint webhooks_format_check
        check (format in ('', 'slack', 'discord', 'teams', 'telegram', 'pagerduty', 'custom')),
    add constraint webhooks_template_check check ((format = 'custom') = (template is not null)),
    add constraint webhooks_mailbox_check check ((name = 'default') = (mailbox is null)),
    add constraint webhooks_schedule_check check ((cron is null) = (timezone is null)
        and (next_run_at is null or cron is not null)
        and last_status in ('success', 'failure'));
create index webhooks_due_idx on echovalue.webhooks (next_run_at) where next_run_at is not null;

alter table echovalue.deliveries
    add column webhook text not null default 'default',
    add column kind text not null default 'mail',
    add column body text,
    add column scheduled_for timestamptz,
    alter column message_id drop not null,
    add constraint deliveries_kind_check check (
        (kind = 'mail' and message_id is not null and body is null and scheduled_for is null)
        or (kind = 'scheduled' and message_id is null and body is not null and scheduled_for is not null)
        or (kind = 'test' and message_id is null and body is not null and scheduled_for is null));
alter table echovalue.deliveries
    add foreign key (wallet_id) references echovalue.wallets (id) on delete cascade;
drop index echovalue.deliveries_due_idx;
create index deliveries_due_idx on echovalue.deliveries (next_attempt_at)
    where state = 'pending' and kind <> 'test';
create index deliveries_test_idx on echovalue.deliveries (created)
    where state = 'pending' and kind = 'test';
create unique index deliveries_run_idx on echovalue.deliveries (wallet_id, webhook, scheduled_for)
    where kind = 'scheduled';

create index deliveries_unmessaged_idx on echovalue.deliveries (created) where kind <> 'mail';
create index logs_endpoint_idx on echovalue.logs (wallet_id, endpoint, id);

insert into echovalue.prices (operation, credits, endpoint) values
    ('webhook_show', 1, 'webhook'), ('webhook_put', 1, 'webhook'), ('webhook_patch', 1, 'webhook'),
    ('webhook_remove', 1, 'webhook'), ('webhook_test', 1, 'webhook'),
    ('scheduled_run', 2, 'webhook')
on conflict (operation) do nothing;
