//! MailboxService: CRUD, presets, connection tests and test mail.

use deskmail_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::crud;
use super::delete::delete;
use super::probe;
use super::resources::Resources;

#[tonic::async_trait]
impl pb::mailbox_service_server::MailboxService for Resources {
    async fn list_mailboxes(
        &self,
        r: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListMailboxesResponse>, Status> {
        let page = crud::list::<pb::Mailbox>(&self.state, r.get_ref()).await?;
        Ok(Response::new(pb::ListMailboxesResponse {
            mailboxes: page.items,
            next_page_token: page.next_page_token,
            total_size: page.total_size,
        }))
    }

    async fn get_mailbox(&self, r: Request<pb::GetRequest>) -> Result<Response<pb::Mailbox>, Status> {
        Ok(Response::new(crud::get(&self.state, &r.get_ref().id).await?))
    }

    async fn create_mailbox(
        &self,
        r: Request<pb::CreateMailboxRequest>,
    ) -> Result<Response<pb::Mailbox>, Status> {
        Ok(Response::new(crud::create(&self.state, r.into_inner().mailbox.unwrap_or_default()).await?))
    }

    async fn update_mailbox(
        &self,
        r: Request<pb::UpdateMailboxRequest>,
    ) -> Result<Response<pb::Mailbox>, Status> {
        let req = r.into_inner();
        Ok(Response::new(crud::update(&self.state, req.mailbox.unwrap_or_default(), req.update_mask).await?))
    }

    async fn delete_mailbox(
        &self,
        r: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        delete::<pb::Mailbox>(&self.state, r.get_ref()).await?;
        Ok(Response::new(pb::DeleteResponse {}))
    }

    async fn list_presets(
        &self,
        _r: Request<pb::ListPresetsRequest>,
    ) -> Result<Response<pb::ListPresetsResponse>, Status> {
        Ok(Response::new(pb::ListPresetsResponse { presets: crate::presets::all() }))
    }

    async fn test_connection(
        &self,
        r: Request<pb::TestConnectionRequest>,
    ) -> Result<Response<pb::TestConnectionResponse>, Status> {
        let req = r.into_inner();
        let mailbox = probe::resolve(&self.state, &req.id, req.mailbox).await?;
        let results = probe::test(&mailbox, req.direction).await;
        Ok(Response::new(pb::TestConnectionResponse { results }))
    }

    async fn send_test_email(
        &self,
        r: Request<pb::SendTestEmailRequest>,
    ) -> Result<Response<pb::SendTestEmailResponse>, Status> {
        let req = r.into_inner();
        let mailbox = probe::resolve(&self.state, &req.id, None).await?;
        Ok(Response::new(probe::send_test(&mailbox, &req).await?))
    }
}
