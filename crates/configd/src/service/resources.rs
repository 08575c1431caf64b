//! The resource services whose calls are the plain CRUD of `crud.rs`.

use deskmail_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::crud;
use super::delete::delete;
use crate::state::AppState;

/// One struct serves every admin resource service.
#[derive(Debug, Clone)]
pub struct Resources {
    pub state: AppState,
    /// Cancelled when configd stops: open Watch streams end then, so daemons reconnect
    /// (to this configd when it is back, or to another) instead of waiting on a dead stream.
    pub shutdown: deskmail_runtime::CancellationToken,
}

macro_rules! resource_service {
    ($trait:path, $ty:ty, $field:ident, $list:ident, $list_resp:ident, $items:ident,
     $get:ident, $create:ident, $create_req:ident, $update:ident, $update_req:ident, $delete:ident) => {
        #[tonic::async_trait]
        impl $trait for Resources {
            async fn $list(&self, r: Request<pb::ListRequest>) -> Result<Response<pb::$list_resp>, Status> {
                let page = crud::list::<$ty>(&self.state, r.get_ref()).await?;
                Ok(Response::new(pb::$list_resp {
                    $items: page.items,
                    next_page_token: page.next_page_token,
                    total_size: page.total_size,
                }))
            }
            async fn $get(&self, r: Request<pb::GetRequest>) -> Result<Response<$ty>, Status> {
                Ok(Response::new(crud::get::<$ty>(&self.state, &r.get_ref().id).await?))
            }
            async fn $create(&self, r: Request<pb::$create_req>) -> Result<Response<$ty>, Status> {
                let item = r.into_inner().$field.unwrap_or_default();
                Ok(Response::new(crud::create(&self.state, item).await?))
            }
            async fn $update(&self, r: Request<pb::$update_req>) -> Result<Response<$ty>, Status> {
                let req = r.into_inner();
                let item = req.$field.unwrap_or_default();
                Ok(Response::new(crud::update(&self.state, item, req.update_mask).await?))
            }
            async fn $delete(
                &self,
                r: Request<pb::DeleteRequest>,
            ) -> Result<Response<pb::DeleteResponse>, Status> {
                delete::<$ty>(&self.state, r.get_ref()).await?;
                Ok(Response::new(pb::DeleteResponse {}))
            }
        }
    };
}

resource_service!(
    pb::queue_service_server::QueueService,
    pb::Queue,
    queue,
    list_queues,
    ListQueuesResponse,
    queues,
    get_queue,
    create_queue,
    CreateQueueRequest,
    update_queue,
    UpdateQueueRequest,
    delete_queue
);
resource_service!(
    pb::system_address_service_server::SystemAddressService,
    pb::SystemAddress,
    system_address,
    list_system_addresses,
    ListSystemAddressesResponse,
    system_addresses,
    get_system_address,
    create_system_address,
    CreateSystemAddressRequest,
    update_system_address,
    UpdateSystemAddressRequest,
    delete_system_address
);
resource_service!(
    pb::company_service_server::CompanyService,
    pb::Company,
    company,
    list_companies,
    ListCompaniesResponse,
    companies,
    get_company,
    create_company,
    CreateCompanyRequest,
    update_company,
    UpdateCompanyRequest,
    delete_company
);
resource_service!(
    pb::contract_service_server::ContractService,
    pb::Contract,
    contract,
    list_contracts,
    ListContractsResponse,
    contracts,
    get_contract,
    create_contract,
    CreateContractRequest,
    update_contract,
    UpdateContractRequest,
    delete_contract
);
resource_service!(
    pb::filter_service_server::FilterService,
    pb::Filter,
    filter,
    list_filters,
    ListFiltersResponse,
    filters,
    get_filter,
    create_filter,
    CreateFilterRequest,
    update_filter,
    UpdateFilterRequest,
    delete_filter
);

#[tonic::async_trait]
impl pb::settings_service_server::SettingsService for Resources {
    async fn get_settings(
        &self,
        _r: Request<pb::GetSettingsRequest>,
    ) -> Result<Response<pb::Settings>, Status> {
        Ok(Response::new(self.state.snapshots.borrow().admin.settings.clone().unwrap_or_default()))
    }

    async fn update_settings(
        &self,
        r: Request<pb::UpdateSettingsRequest>,
    ) -> Result<Response<pb::Settings>, Status> {
        let req = r.into_inner();
        let patch = req.settings.unwrap_or_default();
        let exists =
            self.state.store.find("settings", "settings").await.map_err(super::errors::store_error)?;
        if exists.is_none() {
            // First change: start from the defaults, then apply the patch as an update.
            crud::create(&self.state, crate::resource::default_settings()).await?;
        }
        Ok(Response::new(crud::update(&self.state, patch, req.update_mask).await?))
    }
}
