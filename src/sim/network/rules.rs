//! NSG security rules: reads and writes (each write a long-running operation), and the status
//! of Network's operations.

use super::rule_json;
use crate::sim::lro::{Outcome, Poll};
use crate::sim::resource::{
    check_scope, json_body, missing, not_found, nsg_id, operation_not_found, Answer, Ctx, Plan,
};
use crate::sim::world::{InGroup, Nsg, Rule, World};
use crate::sim::Reply;
use serde_json::{json, Value};

fn lookup_nsg<'w>(world: &'w World, sub: &str, rg: &str, name: &str) -> Result<&'w Nsg, Reply> {
    check_scope(world, sub, Some(rg))?;
    world
        .find_nsg(sub, rg, name)
        .ok_or_else(|| not_found("Microsoft.Network/networkSecurityGroups", name, rg))
}

/// `GET networkSecurityGroups/{nsg}/securityRules/{name}`.
pub(crate) fn get_security_rule(
    ctx: &mut Ctx<'_>,
    sub: &str,
    rg: &str,
    nsg: &str,
    name: &str,
) -> Answer {
    let nsg = lookup_nsg(ctx.world, sub, rg, nsg)?;
    if let Some(writing) = ctx
        .lro
        .pending_view(&format!("{}/securityRules/{name}", nsg_id(nsg)))
    {
        return Ok(Reply::json(200, &writing));
    }
    let rule = nsg
        .rules
        .iter()
        .find(|r| r.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            Reply::arm_error(
                404,
                "NotFound",
                &format!("Resource {}/securityRules/{name} not found.", nsg_id(nsg)),
            )
        })?;
    Ok(Reply::json(200, &rule_json(nsg, "securityRules", rule)))
}

fn bad_rule(code: &str, message: String) -> Reply {
    Reply::arm_error(400, code, &message)
}

/// One of `allowed`, matched case-insensitively and returned in Azure's spelling.
fn one_of(
    props: &Value,
    field: &str,
    allowed: &[&'static str],
    code: &str,
    rule: &str,
) -> Result<&'static str, Reply> {
    let value = props
        .get(field)
        .and_then(Value::as_str)
        .ok_or_else(|| missing(&format!("properties.{field}")))?;
    allowed
        .iter()
        .find(|a| a.eq_ignore_ascii_case(value))
        .copied()
        .ok_or_else(|| {
            bad_rule(
                code,
                format!(
                    "Security rule {rule} has invalid {field} '{value}'. Allowed values: {}.",
                    allowed.join(", ")
                ),
            )
        })
}

/// A singular field or its plural array; `Ok(None)` when neither is given.
fn single_or_plural(
    props: &Value,
    single: &str,
    plural: &str,
) -> Result<(Option<String>, Vec<String>), Reply> {
    let invalid = |field: &str| {
        bad_rule(
            "InvalidRequestFormat",
            format!("Cannot parse the request: 'properties.{field}' has the wrong type."),
        )
    };
    let one = match props.get(single) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(invalid(single)),
    };
    let many = match props.get(plural) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned).ok_or_else(|| invalid(plural)))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(invalid(plural)),
    };
    Ok((one, many))
}

/// A field the world keeps singular: the singular, or a plural with exactly one entry.
fn only_single(props: &Value, single: &str, plural: &str) -> Result<Option<String>, Reply> {
    match single_or_plural(props, single, plural)? {
        (one, many) if many.is_empty() => Ok(one),
        (None, many) if many.len() == 1 => Ok(many.into_iter().next()),
        _ => Err(bad_rule(
            "InvalidRequestFormat",
            format!("The simulator models one '{single}' per rule, not several '{plural}'."),
        )),
    }
}

fn rule_from_body(name: &str, body: &Value) -> Result<Rule, Reply> {
    let props = body
        .get("properties")
        .filter(|p| p.is_object())
        .ok_or_else(|| missing("properties"))?;
    // Esp and Ah exist in Azure but are not modelled here.
    let protocol = one_of(
        props,
        "protocol",
        &["Tcp", "Udp", "Icmp", "*"],
        "SecurityRuleInvalidProtocol",
        name,
    )?;
    let access = one_of(
        props,
        "access",
        &["Allow", "Deny"],
        "SecurityRuleInvalidAccess",
        name,
    )?;
    let direction = one_of(
        props,
        "direction",
        &["Inbound", "Outbound"],
        "SecurityRuleInvalidDirection",
        name,
    )?;
    let priority = props
        .get("priority")
        .and_then(Value::as_u64)
        .ok_or_else(|| missing("properties.priority"))?;
    let priority = u32::try_from(priority)
        .ok()
        .filter(|p| (100..=4096).contains(p))
        .ok_or_else(|| {
            bad_rule(
                "SecurityRuleInvalidPriority",
                format!("Security rule {name} has invalid Priority. Value provided: {priority}. Allowed range 100-4096."),
            )
        })?;
    let (source, sources) =
        single_or_plural(props, "sourceAddressPrefix", "sourceAddressPrefixes")?;
    let (destination_port, destination_ports) =
        single_or_plural(props, "destinationPortRange", "destinationPortRanges")?;
    let source_port = only_single(props, "sourcePortRange", "sourcePortRanges")?;
    let destination = only_single(
        props,
        "destinationAddressPrefix",
        "destinationAddressPrefixes",
    )?;
    let description = props
        .get("description")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(Rule {
        name: name.to_owned(),
        priority,
        direction: direction.to_owned(),
        access: access.to_owned(),
        protocol: protocol.to_owned(),
        source: if sources.is_empty() {
            Some(source.unwrap_or_else(|| "*".to_owned()))
        } else {
            None
        },
        sources,
        source_port: source_port.unwrap_or_else(|| "*".to_owned()),
        destination: Some(destination.unwrap_or_else(|| "*".to_owned())),
        destination_port: if destination_ports.is_empty() {
            Some(destination_port.unwrap_or_else(|| "*".to_owned()))
        } else {
            None
        },
        destination_ports,
        description,
    })
}

pub(super) fn network_operation_status_url(
    base: &str,
    sub: &str,
    location: &str,
    id: &str,
) -> String {
    format!(
        "{base}/subscriptions/{sub}/providers/Microsoft.Network/locations/{location}/operations/{id}?api-version=2024-03-01"
    )
}

/// `PUT networkSecurityGroups/{nsg}/securityRules/{name}`: the rule is in the NSG (and so in
/// the effective rules) once the operation is done.
pub(crate) fn put_security_rule(
    ctx: &mut Ctx<'_>,
    sub: &str,
    rg: &str,
    nsg_name: &str,
    name: &str,
) -> Answer {
    let nsg = lookup_nsg(ctx.world, sub, rg, nsg_name)?;
    let body = json_body(ctx)?;
    let existing = nsg.rules.iter().find(|r| r.name.eq_ignore_ascii_case(name));
    let name = existing.map_or(name, |r| r.name.as_str());
    let rule = rule_from_body(name, &body)?;
    if let Some(other) = nsg.rules.iter().find(|r| {
        !r.name.eq_ignore_ascii_case(name)
            && r.priority == rule.priority
            && r.direction == rule.direction
    }) {
        return Err(bad_rule(
            "SecurityRuleConflict",
            format!(
                "Security rule {name} conflicts with rule {}. Rules cannot have the same Priority and Direction. To learn more, see aka.ms/nsgrules.",
                other.name
            ),
        ));
    }
    let created = existing.is_none();
    let mut response = rule_json(nsg, "securityRules", &rule);
    response["properties"]["provisioningState"] = json!("Updating");
    let result = rule_json(nsg, "securityRules", &rule);
    // The operation holds the rule, so reads of it move an unwatched operation on.
    let rule_id = format!("{}/securityRules/{}", nsg_id(nsg), rule.name);
    let (nsg_sub, nsg_rg, nsg_name, location) = (
        nsg.subscription.clone(),
        nsg.resource_group.clone(),
        nsg.name.clone(),
        nsg.location.clone(),
    );
    let mut plan = Plan::new(Outcome::Body(result));
    // Azure shows the rule, `Updating`, as soon as the PUT is accepted.
    plan.pending_view = Some(response.clone());
    plan.on_complete = Some(Box::new(move |world: &mut World| {
        if let Some(nsg) = world
            .nsgs
            .iter_mut()
            .find(|n| n.is(&nsg_sub, &nsg_rg, &nsg_name))
        {
            match nsg
                .rules
                .iter_mut()
                .find(|r| r.name.eq_ignore_ascii_case(&rule.name))
            {
                Some(slot) => *slot = rule,
                None => nsg.rules.push(rule),
            }
        }
    }));
    let op = ctx.accept(sub, "security rule update", Some(rule_id), plan);
    Ok(Reply::json(if created { 201 } else { 200 }, &response)
        .header(
            "Azure-AsyncOperation",
            network_operation_status_url(ctx.base, sub, &location, &op),
        )
        .header("Retry-After", ctx.retry_after.to_string()))
}

/// `GET .../Microsoft.Network/locations/{loc}/operations/{id}`: Network's async status body.
pub(crate) fn network_operation_status(ctx: &mut Ctx<'_>, sub: &str, id: &str) -> Answer {
    check_scope(ctx.world, sub, None)?;
    match ctx.lro.poll(sub, id, ctx.world) {
        None => Err(operation_not_found(id)),
        Some(Poll::InProgress { .. }) => Ok(Reply::json(200, &json!({"status": "InProgress"}))
            .header("Retry-After", ctx.retry_after.to_string())),
        Some(Poll::Done { outcome, .. }) => Ok(Reply::json(
            200,
            &match outcome {
                Outcome::Failed { code, message } => {
                    json!({"status": "Failed", "error": {"code": code, "message": message}})
                }
                Outcome::Succeeded | Outcome::Body(_) => json!({"status": "Succeeded"}),
            },
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_from_bodies_take_singular_or_plural_fields() {
        let body = json!({"properties": {
            "protocol": "tcp", "access": "allow", "direction": "inbound", "priority": 310,
            "sourceAddressPrefixes": ["203.0.113.0/24", "198.51.100.7"],
            "destinationPortRange": "3389", "sourcePortRanges": ["*"],
        }});
        let rule = rule_from_body("allow-office", &body).expect("valid rule");
        assert_eq!(
            (
                rule.protocol.as_str(),
                rule.access.as_str(),
                rule.direction.as_str()
            ),
            ("Tcp", "Allow", "Inbound")
        );
        assert_eq!(rule.source, None);
        assert_eq!(rule.sources.len(), 2);
        assert_eq!(rule.source_port, "*");
        let bad = json!({"properties": {"protocol": "Tcp", "access": "Allow", "direction": "Inbound", "priority": 99}});
        assert!(rule_from_body("x", &bad).is_err());
    }
}
