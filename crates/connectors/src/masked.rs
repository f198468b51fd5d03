//! Every error that leaves a connector is stored (`connections.last_error`), logged, or answered
//! to an admin. A CRM that echoes a request in its error (a header, an `api_key` in the query,
//! a Basic password) would put the credential into all three; this decorator masks each
//! credential and session of the connection in every error, by value, before anyone sees it.

use std::sync::Arc;

use async_trait::async_trait;
use crmhub_core::crm::{
    CallLog, Capability, CardOptions, ChangeCursor, ChangePage, ConnectionCheck, ContactCard, ContactSummary, Crm,
    CrmError, LoggedCall, NewContact, NewNote, NewTicket, SmsReceipt, SmsSender,
};
use crmhub_core::phone::PhoneNumber;

use crate::http::KnownSecrets;

pub struct Masked<T: ?Sized> {
    inner: Arc<T>,
    secrets: KnownSecrets,
}

impl<T: ?Sized> Masked<T> {
    pub fn new(inner: Arc<T>, secrets: KnownSecrets) -> Self {
        Self { inner, secrets }
    }

    fn mask<V>(&self, result: Result<V, CrmError>) -> Result<V, CrmError> {
        result.map_err(|e| self.secrets.redact_error(e))
    }
}

#[async_trait]
impl<T: Crm + ?Sized> Crm for Masked<T> {
    fn capabilities(&self) -> &[Capability] {
        self.inner.capabilities()
    }

    async fn check(&self) -> Result<ConnectionCheck, CrmError> {
        self.mask(self.inner.check().await)
    }

    async fn search_contacts(&self, query: &str, limit: usize) -> Result<Vec<ContactSummary>, CrmError> {
        self.mask(self.inner.search_contacts(query, limit).await)
    }

    async fn find_by_phone(&self, phone: &PhoneNumber) -> Result<Vec<ContactSummary>, CrmError> {
        self.mask(self.inner.find_by_phone(phone).await)
    }

    async fn contact_card(&self, id: &str, options: &CardOptions) -> Result<ContactCard, CrmError> {
        self.mask(self.inner.contact_card(id, options).await)
    }

    async fn create_contact(&self, contact: &NewContact) -> Result<ContactSummary, CrmError> {
        self.mask(self.inner.create_contact(contact).await)
    }

    async fn log_call(&self, call: &CallLog) -> Result<LoggedCall, CrmError> {
        self.mask(self.inner.log_call(call).await)
    }

    async fn add_note(&self, note: &NewNote) -> Result<String, CrmError> {
        self.mask(self.inner.add_note(note).await)
    }

    async fn create_ticket(&self, ticket: &NewTicket) -> Result<String, CrmError> {
        self.mask(self.inner.create_ticket(ticket).await)
    }

    async fn list_changes(&self, since: Option<&ChangeCursor>) -> Result<ChangePage, CrmError> {
        self.mask(self.inner.list_changes(since).await)
    }
}

#[async_trait]
impl<T: SmsSender + ?Sized> SmsSender for Masked<T> {
    async fn send_sms(&self, to: &PhoneNumber, text: &str, sender: Option<&str>) -> Result<SmsReceipt, CrmError> {
        self.mask(self.inner.send_sms(to, text, sender).await)
    }
}
