//! `deskmailctl company ...` and `deskmailctl contract ...`.

use clap::{Args, Subcommand};
use comfy_table::Cell;
use deskmail_proto::v1 as pb;

use crate::client::Api;
use crate::crud::{self, Ctx, DeleteArgs, ListArgs, Names, Page, Resource, resource_calls};
use crate::fail::Fail;
use crate::patch::{JsonArg, Patch};

impl Resource for pb::Company {
    const KIND: &'static str = "company";
    const ITEMS: &'static str = "companies";
    const HEADER: &'static [&'static str] = &["NAME", "DOMAINS", "OUTBOUND MAILBOX", "ID"];

    fn id(&self) -> &str {
        &self.id
    }
    fn set_id(&mut self, id: String) {
        self.id = id;
    }
    fn row(&self, names: &Names) -> Vec<Cell> {
        let domains = if self.domains.is_empty() { "-".to_owned() } else { self.domains.join(", ") };
        vec![
            Cell::new(&self.name),
            Cell::new(domains),
            Cell::new(names.mailbox(&self.outbound_mailbox_id)),
            Cell::new(&self.id),
        ]
    }
    resource_calls!(
        companies,
        list_companies,
        companies,
        get_company,
        create_company,
        CreateCompanyRequest,
        update_company,
        UpdateCompanyRequest,
        company,
        delete_company
    );
}

impl Resource for pb::Contract {
    const KIND: &'static str = "contract";
    const ITEMS: &'static str = "contracts";
    const HEADER: &'static [&'static str] = &["NAME", "COMPANY", "OUTBOUND MAILBOX", "ID"];

    fn id(&self) -> &str {
        &self.id
    }
    fn set_id(&mut self, id: String) {
        self.id = id;
    }
    fn row(&self, names: &Names) -> Vec<Cell> {
        vec![
            Cell::new(&self.name),
            Cell::new(names.company(&self.company_id)),
            Cell::new(names.mailbox(&self.outbound_mailbox_id)),
            Cell::new(&self.id),
        ]
    }
    resource_calls!(
        contracts,
        list_contracts,
        contracts,
        get_contract,
        create_contract,
        CreateContractRequest,
        update_contract,
        UpdateContractRequest,
        contract,
        delete_contract
    );
}

#[derive(Debug, Subcommand)]
pub enum CompanyCommand {
    /// List the companies.
    List(ListArgs),
    /// Show one company.
    Get {
        /// Id or name.
        name: String,
    },
    /// Create a company.
    Create(CompanyFields),
    /// Change the fields whose flags are given (and only those).
    Update {
        /// Id or name.
        #[arg(value_name = "NAME")]
        target: String,
        #[command(flatten)]
        fields: CompanyFields,
    },
    /// Delete a company (refused while contracts belong to it; --force deletes them too).
    Delete(DeleteArgs),
}

#[derive(Debug, Args)]
pub struct CompanyFields {
    /// The company's unique name.
    #[arg(long)]
    name: Option<String>,
    /// A mail domain of the company (repeat for more); on update the list is replaced, and
    /// `--domain ''` clears it.
    #[arg(long = "domain", value_name = "DOMAIN")]
    domains: Option<Vec<String>>,
    /// Outbound mailbox for its mail (name or id; '' for the system default).
    #[arg(long, value_name = "MAILBOX")]
    outbound_mailbox: Option<String>,
    #[command(flatten)]
    json: JsonArg,
}

impl CompanyFields {
    async fn patch(self, api: &Api) -> Result<Patch<pb::Company>, Fail> {
        let mut p = Patch::<pb::Company>::new(&self.json)?;
        p.set("name", self.name, |c, v| c.name = v);
        let domains = self.domains.map(|d| d.into_iter().filter(|d| !d.is_empty()).collect());
        p.set("domains", domains, |c, v| c.domains = v);
        if let Some(m) = self.outbound_mailbox {
            let id = crud::resolve::<pb::Mailbox>(api, "--outbound-mailbox", &m).await?;
            p.set("outbound_mailbox_id", Some(id), |c, v| c.outbound_mailbox_id = v);
        }
        Ok(p)
    }
}

pub async fn run_company(ctx: &Ctx, command: CompanyCommand) -> Result<u8, Fail> {
    match command {
        CompanyCommand::List(args) => crud::list::<pb::Company>(ctx, &args).await,
        CompanyCommand::Get { name } => crud::get::<pb::Company>(ctx, &name).await,
        CompanyCommand::Create(fields) => crud::create(ctx, fields.patch(&ctx.api).await?).await,
        CompanyCommand::Update { target, fields } => {
            crud::update(ctx, &target, fields.patch(&ctx.api).await?).await
        }
        CompanyCommand::Delete(args) => crud::delete::<pb::Company>(ctx, &args).await,
    }
}

#[derive(Debug, Subcommand)]
pub enum ContractCommand {
    /// List the contracts.
    List(ListArgs),
    /// Show one contract.
    Get {
        /// Id or name.
        name: String,
    },
    /// Create a contract.
    Create(ContractFields),
    /// Change the fields whose flags are given (and only those).
    Update {
        /// Id or name.
        #[arg(value_name = "NAME")]
        target: String,
        #[command(flatten)]
        fields: ContractFields,
    },
    /// Delete a contract.
    Delete(DeleteArgs),
}

#[derive(Debug, Args)]
pub struct ContractFields {
    /// The contract's unique name.
    #[arg(long)]
    name: Option<String>,
    /// The company it belongs to (name or id).
    #[arg(long, value_name = "COMPANY")]
    company: Option<String>,
    /// Outbound mailbox for its mail (name or id; '' for the company's box).
    #[arg(long, value_name = "MAILBOX")]
    outbound_mailbox: Option<String>,
    #[command(flatten)]
    json: JsonArg,
}

impl ContractFields {
    async fn patch(self, api: &Api) -> Result<Patch<pb::Contract>, Fail> {
        let mut p = Patch::<pb::Contract>::new(&self.json)?;
        p.set("name", self.name, |c, v| c.name = v);
        if let Some(c) = self.company {
            let id = crud::resolve::<pb::Company>(api, "--company", &c).await?;
            p.set("company_id", Some(id), |c, v| c.company_id = v);
        }
        if let Some(m) = self.outbound_mailbox {
            let id = crud::resolve::<pb::Mailbox>(api, "--outbound-mailbox", &m).await?;
            p.set("outbound_mailbox_id", Some(id), |c, v| c.outbound_mailbox_id = v);
        }
        Ok(p)
    }
}

pub async fn run_contract(ctx: &Ctx, command: ContractCommand) -> Result<u8, Fail> {
    match command {
        ContractCommand::List(args) => crud::list::<pb::Contract>(ctx, &args).await,
        ContractCommand::Get { name } => crud::get::<pb::Contract>(ctx, &name).await,
        ContractCommand::Create(fields) => crud::create(ctx, fields.patch(&ctx.api).await?).await,
        ContractCommand::Update { target, fields } => {
            crud::update(ctx, &target, fields.patch(&ctx.api).await?).await
        }
        ContractCommand::Delete(args) => crud::delete::<pb::Contract>(ctx, &args).await,
    }
}
