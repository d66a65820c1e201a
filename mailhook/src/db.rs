//! A worker's own database connection: opened when first needed, dropped after an error and
//! opened again on the next use. Not pooled: each worker task holds one.

use tokio_postgres::{Client, NoTls};

pub struct Connection {
    pg: tokio_postgres::Config,
    client: Option<Client>,
}

impl Connection {
    pub fn new(pg: tokio_postgres::Config) -> Self {
        Self { pg, client: None }
    }

    /// The open client, connecting first when there is none (or it closed).
    pub async fn client(&mut self) -> Result<&Client, tokio_postgres::Error> {
        let client = match self.client.take() {
            Some(client) if !client.is_closed() => client,
            _ => {
                let (client, connection) = self.pg.connect(NoTls).await?;
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "worker connection ended");
                    }
                });
                client
            }
        };
        Ok(self.client.insert(client))
    }

    /// Forgets the client after an error, so the next use reconnects.
    pub fn reset(&mut self) {
        self.client = None;
    }
}
