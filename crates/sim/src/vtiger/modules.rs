//! Module schemas (the default 8.2 fields of the modules crmhub uses), `listtypes` and
//! `describe`. Field order is the order records are returned in; the mandatory lists follow the
//! contract's table, whose order decides which field a `MANDATORY_FIELDS_MISSING` names first.

use super::json::Out;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldType {
    String,
    Text,
    Phone,
    Email,
    Url,
    Date,
    DateTime,
    Time,
    Boolean,
    Integer,
    Double,
    Currency,
    Picklist,
    Reference,
    Owner,
    Image,
}

impl FieldType {
    pub(crate) fn name(self) -> &'static str {
        match self {
            FieldType::String => "string",
            FieldType::Text => "text",
            FieldType::Phone => "phone",
            FieldType::Email => "email",
            FieldType::Url => "url",
            FieldType::Date => "date",
            FieldType::DateTime => "datetime",
            FieldType::Time => "time",
            FieldType::Boolean => "boolean",
            FieldType::Integer => "integer",
            FieldType::Double => "double",
            FieldType::Currency => "currency",
            FieldType::Picklist => "picklist",
            FieldType::Reference => "reference",
            FieldType::Owner => "owner",
            FieldType::Image => "image",
        }
    }

    /// Columns MySQL stores as numbers, so comparisons and sorting are numeric.
    pub(crate) fn is_numeric(self) -> bool {
        matches!(self, FieldType::Integer | FieldType::Double | FieldType::Currency)
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct FieldDef {
    pub(crate) name: &'static str,
    pub(crate) label: &'static str,
    pub(crate) ty: FieldType,
    /// Fields the server fills itself (numbers, timestamps, `source`, …): client values ignored.
    pub(crate) editable: bool,
    pub(crate) refers_to: &'static [&'static str],
    pub(crate) picklist: &'static [&'static str],
}

const fn f(name: &'static str, label: &'static str, ty: FieldType) -> FieldDef {
    FieldDef { name, label, ty, editable: true, refers_to: &[], picklist: &[] }
}

const fn ro(name: &'static str, label: &'static str, ty: FieldType) -> FieldDef {
    FieldDef { editable: false, ..f(name, label, ty) }
}

const fn pick(name: &'static str, label: &'static str, values: &'static [&'static str]) -> FieldDef {
    FieldDef { picklist: values, ..f(name, label, FieldType::Picklist) }
}

const fn refs(name: &'static str, label: &'static str, to: &'static [&'static str]) -> FieldDef {
    FieldDef { refers_to: to, ..f(name, label, FieldType::Reference) }
}

use FieldType as T;

const ASSIGNED: FieldDef =
    FieldDef { refers_to: &["Users", "Groups"], ..f("assigned_user_id", "Assigned To", T::Owner) };
const CREATED: FieldDef = ro("createdtime", "Created Time", T::DateTime);
const MODIFIED: FieldDef = ro("modifiedtime", "Modified Time", T::DateTime);
const MODIFIED_BY: FieldDef = FieldDef { editable: false, ..refs("modifiedby", "Last Modified By", &["Users"]) };
const SOURCE: FieldDef = ro("source", "Source", T::String);
const STARRED: FieldDef = f("starred", "starred", T::Boolean);
const TAGS: FieldDef = f("tags", "tags", T::String);
const DESCRIPTION: FieldDef = f("description", "Description", T::Text);
const CONVERTED: FieldDef = ro("isconvertedfromlead", "Is Converted From Lead", T::Boolean);

const LEAD_SOURCES: &[&str] = &[
    "Cold Call",
    "Existing Customer",
    "Self Generated",
    "Employee",
    "Partner",
    "Public Relations",
    "Direct Mail",
    "Conference",
    "Trade Show",
    "Web Site",
    "Word of mouth",
    "Other",
];
const ACTIVITY_PARENTS: &[&str] = &["Accounts", "Leads", "Potentials", "HelpDesk", "Campaigns"];
const PRIORITIES: &[&str] = &["High", "Medium", "Low"];
const VISIBILITY: &[&str] = &["Private", "Public"];
const MINUTES: &[&str] = &["00", "15", "30", "45"];

const CONTACT_FIELDS: &[FieldDef] = &[
    pick("salutationtype", "Salutation", &["Mr.", "Ms.", "Mrs.", "Dr.", "Prof."]),
    f("firstname", "First Name", T::String),
    ro("contact_no", "Contact Id", T::String),
    f("phone", "Office Phone", T::Phone),
    f("lastname", "Last Name", T::String),
    f("mobile", "Mobile Phone", T::Phone),
    refs("account_id", "Organization Name", &["Accounts"]),
    f("homephone", "Home Phone", T::Phone),
    pick("leadsource", "Lead Source", LEAD_SOURCES),
    f("otherphone", "Other Phone", T::Phone),
    f("title", "Title", T::String),
    f("fax", "Fax", T::Phone),
    f("department", "Department", T::String),
    f("birthday", "Birthdate", T::Date),
    f("email", "Email", T::Email),
    refs("contact_id", "Reports To", &["Contacts"]),
    f("assistant", "Assistant", T::String),
    f("secondaryemail", "Secondary Email", T::Email),
    f("assistantphone", "Assistant Phone", T::Phone),
    f("donotcall", "Do Not Call", T::Boolean),
    f("emailoptout", "Email Opt Out", T::Boolean),
    ASSIGNED,
    f("reference", "Reference", T::Boolean),
    f("notify_owner", "Notify Owner", T::Boolean),
    CREATED,
    MODIFIED,
    MODIFIED_BY,
    CONVERTED,
    SOURCE,
    STARRED,
    TAGS,
    f("portal", "Portal User", T::Boolean),
    f("support_start_date", "Support Start Date", T::Date),
    f("support_end_date", "Support End Date", T::Date),
    f("mailingstreet", "Mailing Street", T::Text),
    f("otherstreet", "Other Street", T::Text),
    f("mailingcity", "Mailing City", T::String),
    f("othercity", "Other City", T::String),
    f("mailingstate", "Mailing State", T::String),
    f("otherstate", "Other State", T::String),
    f("mailingzip", "Mailing Zip", T::String),
    f("otherzip", "Other Zip", T::String),
    f("mailingcountry", "Mailing Country", T::String),
    f("othercountry", "Other Country", T::String),
    f("mailingpobox", "Mailing Po Box", T::String),
    f("otherpobox", "Other Po Box", T::String),
    DESCRIPTION,
    f("imagename", "Contact Image", T::Image),
];

const ACCOUNT_FIELDS: &[FieldDef] = &[
    f("accountname", "Organization Name", T::String),
    ro("account_no", "Organization No", T::String),
    f("website", "Website", T::Url),
    f("phone", "Phone", T::Phone),
    f("tickersymbol", "Ticker Symbol", T::String),
    f("fax", "Fax", T::Phone),
    refs("account_id", "Member Of", &["Accounts"]),
    f("otherphone", "Other Phone", T::Phone),
    f("employees", "Employees", T::Integer),
    f("email1", "Email", T::Email),
    f("email2", "Other Email", T::Email),
    f("ownership", "Ownership", T::String),
    pick(
        "industry",
        "Industry",
        &[
            "Apparel",
            "Banking",
            "Biotechnology",
            "Chemicals",
            "Communications",
            "Construction",
            "Consulting",
            "Education",
            "Electronics",
            "Energy",
            "Engineering",
            "Entertainment",
            "Environmental",
            "Finance",
            "Food & Beverage",
            "Government",
            "Healthcare",
            "Hospitality",
            "Insurance",
            "Machinery",
            "Manufacturing",
            "Media",
            "Not For Profit",
            "Recreation",
            "Retail",
            "Shipping",
            "Technology",
            "Telecommunications",
            "Transportation",
            "Utilities",
            "Other",
        ],
    ),
    pick("rating", "Rating", &["Acquired", "Active", "Market Failed", "Project Cancelled", "Shutdown"]),
    pick(
        "accounttype",
        "Type",
        &[
            "Analyst",
            "Competitor",
            "Customer",
            "Integrator",
            "Investor",
            "Partner",
            "Press",
            "Prospect",
            "Reseller",
            "Other",
        ],
    ),
    f("siccode", "SIC Code", T::String),
    f("emailoptout", "Email Opt Out", T::Boolean),
    f("annual_revenue", "Annual Revenue", T::Currency),
    ASSIGNED,
    f("notify_owner", "Notify Owner", T::Boolean),
    MODIFIED,
    CREATED,
    MODIFIED_BY,
    CONVERTED,
    SOURCE,
    STARRED,
    TAGS,
    f("bill_street", "Billing Address", T::Text),
    f("ship_street", "Shipping Address", T::Text),
    f("bill_city", "Billing City", T::String),
    f("ship_city", "Shipping City", T::String),
    f("bill_state", "Billing State", T::String),
    f("ship_state", "Shipping State", T::String),
    f("bill_code", "Billing Code", T::String),
    f("ship_code", "Shipping Code", T::String),
    f("bill_country", "Billing Country", T::String),
    f("ship_country", "Shipping Country", T::String),
    f("bill_pobox", "Billing Po Box", T::String),
    f("ship_pobox", "Shipping Po Box", T::String),
    DESCRIPTION,
];

const TICKET_FIELDS: &[FieldDef] = &[
    ro("ticket_no", "Ticket No", T::String),
    ASSIGNED,
    refs("parent_id", "Organization Name", &["Accounts"]),
    pick("ticketpriorities", "Priority", &["Low", "Normal", "High", "Urgent"]),
    refs("product_id", "Product Name", &["Products"]),
    pick("ticketseverities", "Severity", &["Minor", "Major", "Feature", "Critical"]),
    pick("ticketstatus", "Status", &["Open", "In Progress", "Wait For Response", "Closed"]),
    pick("ticketcategories", "Category", &["Big Problem", "Small Problem", "Other Problem"]),
    ro("update_log", "Update History", T::Text),
    f("hours", "Hours", T::Double),
    f("days", "Days", T::Integer),
    CREATED,
    MODIFIED,
    ro("from_portal", "From Portal", T::Boolean),
    MODIFIED_BY,
    f("ticket_title", "Title", T::String),
    DESCRIPTION,
    f("solution", "Solution", T::Text),
    refs("contact_id", "Contact Name", &["Contacts"]),
    SOURCE,
    STARRED,
    TAGS,
];

const EVENT_FIELDS: &[FieldDef] = &[
    f("subject", "Subject", T::String),
    ASSIGNED,
    f("date_start", "Start Date & Time", T::DateTime),
    f("time_start", "Time Start", T::Time),
    f("time_end", "End Time", T::Time),
    f("due_date", "End Date", T::Date),
    pick("recurringtype", "Recurrence", &["Daily", "Weekly", "Monthly", "Yearly"]),
    f("duration_hours", "Duration", T::Integer),
    pick("duration_minutes", "Duration Minutes", MINUTES),
    refs("parent_id", "Related To", ACTIVITY_PARENTS),
    pick("eventstatus", "Status", &["Planned", "Held", "Not Held"]),
    f("sendnotification", "Send Notification", T::Boolean),
    pick("activitytype", "Activity Type", &["Call", "Meeting", "Mobile Call"]),
    f("location", "Location", T::String),
    CREATED,
    MODIFIED,
    pick("taskpriority", "Priority", PRIORITIES),
    f("notime", "No Time", T::Boolean),
    pick("visibility", "Visibility", VISIBILITY),
    MODIFIED_BY,
    DESCRIPTION,
    refs("contact_id", "Contact Name", &["Contacts"]),
    SOURCE,
    STARRED,
    TAGS,
];

const TASK_FIELDS: &[FieldDef] = &[
    f("subject", "Subject", T::String),
    ASSIGNED,
    f("date_start", "Start Date & Time", T::DateTime),
    f("time_start", "Time Start", T::Time),
    f("time_end", "End Time", T::Time),
    f("due_date", "Due Date", T::Date),
    refs("parent_id", "Related To", ACTIVITY_PARENTS),
    refs("contact_id", "Contact Name", &["Contacts"]),
    pick("taskstatus", "Status", &["Not Started", "In Progress", "Completed", "Pending Input", "Deferred", "Planned"]),
    pick("taskpriority", "Priority", PRIORITIES),
    f("sendnotification", "Send Notification", T::Boolean),
    CREATED,
    MODIFIED,
    // Tasks and events share one table; for tasks the type is fixed to "Task".
    ro("activitytype", "Activity Type", T::String),
    pick("visibility", "Visibility", VISIBILITY),
    DESCRIPTION,
    f("duration_hours", "Duration", T::Integer),
    pick("duration_minutes", "Duration Minutes", MINUTES),
    f("location", "Location", T::String),
    f("notime", "No Time", T::Boolean),
    MODIFIED_BY,
    SOURCE,
    STARRED,
    TAGS,
];

const COMMENT_FIELDS: &[FieldDef] = &[
    f("commentcontent", "Comment", T::Text),
    ASSIGNED,
    CREATED,
    MODIFIED,
    refs(
        "related_to",
        "Related To",
        &["Contacts", "Accounts", "HelpDesk", "Leads", "Potentials", "Project", "ProjectTask", "Campaigns"],
    ),
    FieldDef { editable: false, ..refs("creator", "Creator", &["Users"]) },
    refs("parent_comments", "Related To Comments", &["ModComments"]),
    refs("customer", "Customer", &["Contacts"]),
    refs("userid", "UserId", &["Users"]),
    f("reasontoedit", "ReasonToEdit", T::String),
    f("is_private", "Is Private", T::Integer),
    f("filename", "Attachment", T::String),
    f("related_email_id", "Related Email Id", T::Integer),
    MODIFIED_BY,
    SOURCE,
];

const USER_FIELDS: &[FieldDef] = &[
    ro("user_name", "User Name", T::String),
    ro("is_admin", "Admin", T::Boolean),
    ro("email1", "Email", T::Email),
    ro("status", "Status", T::Picklist),
    ro("first_name", "First Name", T::String),
    ro("last_name", "Last Name", T::String),
    ro("roleid", "Role", T::String),
    ro("time_zone", "Time Zone", T::Picklist),
    ro("date_format", "Date Format", T::Picklist),
    ro("hour_format", "Calendar Hour Format", T::Picklist),
];

#[derive(Debug)]
pub(crate) struct Schema {
    pub(crate) name: &'static str,
    pub(crate) prefix: u32,
    pub(crate) label: &'static str,
    pub(crate) singular: &'static str,
    pub(crate) fields: &'static [FieldDef],
    /// In the order Vtiger checks them.
    pub(crate) mandatory: &'static [&'static str],
    /// Fields joined with a space to make a record's `label`.
    pub(crate) label_from: &'static [&'static str],
    /// What `describe` reports as `labelFields` (for HelpDesk not the field one sends).
    pub(crate) describe_label_fields: &'static str,
    /// Name of the id field in `describe` (Vtiger reports the table's key column).
    pub(crate) id_label: &'static str,
    /// Users are read-only through this simulator.
    pub(crate) writable: bool,
    /// `(field, prefix)` of the module's generated record number, e.g. `("contact_no", "CON")`.
    pub(crate) numbering: Option<(&'static str, &'static str)>,
}

impl Schema {
    pub(crate) fn field(&self, name: &str) -> Option<&'static FieldDef> {
        self.fields.iter().find(|f| f.name == name)
    }

    pub(crate) fn is_mandatory(&self, name: &str) -> bool {
        self.mandatory.contains(&name)
    }
}

pub(crate) static CALENDAR: Schema = Schema {
    name: "Calendar",
    prefix: 9,
    label: "Calendar",
    singular: "Task",
    fields: TASK_FIELDS,
    mandatory: &["subject", "assigned_user_id", "date_start", "time_start", "due_date", "taskstatus"],
    label_from: &["subject"],
    describe_label_fields: "subject",
    id_label: "activityid",
    writable: true,
    numbering: None,
};

pub(crate) static ACCOUNTS: Schema = Schema {
    name: "Accounts",
    prefix: 11,
    label: "Organizations",
    singular: "Organization",
    fields: ACCOUNT_FIELDS,
    mandatory: &["accountname", "assigned_user_id"],
    label_from: &["accountname"],
    describe_label_fields: "accountname",
    id_label: "accountid",
    writable: true,
    numbering: Some(("account_no", "ACC")),
};

pub(crate) static CONTACTS: Schema = Schema {
    name: "Contacts",
    prefix: 12,
    label: "Contacts",
    singular: "Contact",
    fields: CONTACT_FIELDS,
    mandatory: &["lastname", "assigned_user_id"],
    label_from: &["firstname", "lastname"],
    describe_label_fields: "firstname,lastname",
    id_label: "contactid",
    writable: true,
    numbering: Some(("contact_no", "CON")),
};

pub(crate) static HELPDESK: Schema = Schema {
    name: "HelpDesk",
    prefix: 17,
    label: "Tickets",
    singular: "Ticket",
    fields: TICKET_FIELDS,
    mandatory: &["ticket_title", "ticketpriorities", "ticketstatus", "assigned_user_id"],
    label_from: &["ticket_title"],
    describe_label_fields: "title",
    id_label: "ticketid",
    writable: true,
    numbering: Some(("ticket_no", "TT")),
};

pub(crate) static EVENTS: Schema = Schema {
    name: "Events",
    prefix: 18,
    label: "Events",
    singular: "Event",
    fields: EVENT_FIELDS,
    mandatory: &[
        "subject",
        "assigned_user_id",
        "date_start",
        "time_start",
        "due_date",
        "time_end",
        "duration_hours",
        "eventstatus",
        "activitytype",
    ],
    label_from: &["subject"],
    describe_label_fields: "subject",
    id_label: "activityid",
    writable: true,
    numbering: None,
};

pub(crate) static USERS: Schema = Schema {
    name: "Users",
    prefix: 19,
    label: "Users",
    singular: "User",
    fields: USER_FIELDS,
    mandatory: &[],
    label_from: &["first_name", "last_name"],
    describe_label_fields: "first_name,last_name",
    id_label: "id",
    writable: false,
    numbering: None,
};

pub(crate) static MODCOMMENTS: Schema = Schema {
    name: "ModComments",
    prefix: 30,
    label: "Comments",
    singular: "Comment",
    fields: COMMENT_FIELDS,
    mandatory: &["commentcontent", "assigned_user_id", "related_to"],
    label_from: &["commentcontent"],
    describe_label_fields: "commentcontent",
    id_label: "modcommentsid",
    writable: true,
    numbering: None,
};

/// Every simulated module, in `listtypes` order (by entity id, as `vtiger_ws_entity`).
pub(crate) static ALL: [&Schema; 7] = [&CALENDAR, &ACCOUNTS, &CONTACTS, &HELPDESK, &EVENTS, &USERS, &MODCOMMENTS];

/// Exact (case-sensitive) module lookup, as Vtiger's type list is.
pub(crate) fn by_name(name: &str) -> Option<&'static Schema> {
    ALL.iter().copied().find(|s| s.name == name)
}

pub(crate) fn by_prefix(prefix: u32) -> Option<&'static Schema> {
    ALL.iter().copied().find(|s| s.prefix == prefix)
}

/// Groups are owners too; the default install has these three (ids shared with Users' sequence).
pub(crate) const GROUPS_PREFIX: u32 = 20;
pub(crate) const DEFAULT_GROUP_IDS: [u64; 3] = [2, 3, 4];

/// Entity ids of a standard install that this simulator does not model. Ids with these prefixes
/// are well-formed (the record is simply never there); any other prefix is malformed.
pub(crate) fn is_known_unsimulated_prefix(prefix: u32) -> bool {
    matches!(prefix, 10 | 13 | 14 | 15 | 20 | 21)
}

pub(crate) fn module_for_known_prefix(prefix: u32) -> Option<&'static str> {
    by_prefix(prefix).map(|s| s.name).or(match prefix {
        10 => Some("Leads"),
        13 => Some("Potentials"),
        14 => Some("Products"),
        15 => Some("Documents"),
        20 => Some("Groups"),
        21 => Some("Currency"),
        _ => None,
    })
}

/// `listtypes`, optionally restricted to modules having a field of one of `field_types`.
pub(crate) fn listtypes(field_types: Option<&[String]>) -> Out {
    let selected: Vec<&Schema> = ALL
        .iter()
        .copied()
        .filter(|s| match field_types {
            None => true,
            Some(types) => s.fields.iter().any(|f| types.iter().any(|t| t.eq_ignore_ascii_case(f.ty.name()))),
        })
        .collect();
    Out::obj([
        ("types", Out::Arr(selected.iter().map(|s| Out::str(s.name)).collect())),
        (
            "information",
            Out::obj(selected.iter().map(|s| {
                (
                    s.name,
                    Out::obj([
                        ("isEntity", Out::Bool(true)),
                        ("label", Out::str(s.label)),
                        ("singular", Out::str(s.singular)),
                    ]),
                )
            })),
        ),
    ])
}

/// `describe` of `schema`; `mandatory` says which fields must have a value (the stock ones and
/// any an administrator added).
pub(crate) fn describe(schema: &Schema, mandatory: impl Fn(&str) -> bool) -> Out {
    let mut fields: Vec<Out> = schema.fields.iter().map(|f| describe_field(schema, f, mandatory(f.name))).collect();
    fields.push(Out::obj([
        ("name", Out::str("id")),
        ("label", Out::str(schema.id_label)),
        ("mandatory", Out::Bool(false)),
        ("type", Out::obj([("name", Out::str("autogenerated"))])),
        ("isunique", Out::Bool(false)),
        ("nullable", Out::Bool(false)),
        ("editable", Out::Bool(false)),
        ("default", Out::str("")),
    ]));
    Out::obj([
        ("label", Out::str(schema.label)),
        ("name", Out::str(schema.name)),
        ("createable", Out::Bool(schema.writable)),
        ("updateable", Out::Bool(schema.writable)),
        ("deleteable", Out::Bool(schema.writable)),
        ("retrieveable", Out::Bool(true)),
        ("fields", Out::Arr(fields)),
        ("idPrefix", Out::str(schema.prefix.to_string())),
        ("isEntity", Out::Bool(true)),
        ("allowDuplicates", Out::Bool(false)),
        ("labelFields", Out::str(schema.describe_label_fields)),
    ])
}

fn describe_field(schema: &Schema, field: &FieldDef, mandatory: bool) -> Out {
    let mut ty = vec![("name".to_owned(), Out::str(field.ty.name()))];
    match field.ty {
        FieldType::Reference => {
            ty.push(("refersTo".into(), Out::Arr(field.refers_to.iter().map(|m| Out::str(*m)).collect())))
        }
        FieldType::Picklist if !field.picklist.is_empty() => {
            ty.push((
                "picklistValues".into(),
                Out::Arr(
                    field
                        .picklist
                        .iter()
                        .map(|v| Out::obj([("label", Out::str(*v)), ("value", Out::str(*v))]))
                        .collect(),
                ),
            ));
            ty.push(("defaultValue".into(), Out::str(field.picklist.first().copied().unwrap_or(""))));
        }
        FieldType::Date => ty.push(("format".into(), Out::str("yyyy-mm-dd"))),
        _ => {}
    }
    Out::obj([
        ("name", Out::str(field.name)),
        ("label", Out::str(field.label)),
        ("mandatory", Out::Bool(mandatory)),
        ("type", Out::Obj(ty)),
        ("isunique", Out::Bool(false)),
        ("nullable", Out::Bool(!mandatory)),
        ("editable", Out::Bool(field.editable && schema.writable)),
        ("default", Out::str("")),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contacts_fields_follow_the_contract_order() {
        let names: Vec<&str> = CONTACTS.fields.iter().map(|f| f.name).collect();
        assert_eq!(&names[..6], &["salutationtype", "firstname", "contact_no", "phone", "lastname", "mobile"]);
        assert_eq!(names.last(), Some(&"imagename"));
        assert_eq!(names.len(), 48);
    }

    #[test]
    fn every_mandatory_field_exists() {
        for schema in ALL {
            for m in schema.mandatory {
                assert!(schema.field(m).is_some(), "{}.{m}", schema.name);
            }
        }
    }
}
