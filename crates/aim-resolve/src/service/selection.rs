//! S-02/S-03/S-04/S-06: which template a service runs, with one explanation per candidate.
//!
//! Pure and order-independent: the same candidates in any order give the same choice and the same text.
//! Two equally good candidates are never chosen between at random: the service names both and waits for
//! `spec.template.name`.

use aim_api::{
    ReferenceScope, ResolvedHardware, ResolvedReference, TemplateCandidate, TemplatePhase,
    TemplateScope,
};
use aim_hardware::{Availability, Inventory, availability};

/// A template the service could run, as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate<'a> {
    pub scope: TemplateScope,
    pub name: &'a str,
    /// `None` for cluster templates.
    pub namespace: Option<&'a str>,
    pub uid: Option<&'a str>,
    pub model_name: &'a str,
    /// `None` until the template has a status.
    pub phase: Option<TemplatePhase>,
    /// The message of the template's `Ready` condition, if any (why it is not Ready).
    pub ready_message: Option<&'a str>,
    pub resolved_hardware: Option<&'a ResolvedHardware>,
}

/// What selection looks at.
#[derive(Debug, Clone)]
pub struct SelectionInput<'a> {
    pub service_namespace: &'a str,
    /// The service's model (by name, after S-01).
    pub model_name: &'a str,
    /// `spec.template.name`, if set (S-02).
    pub template_name: Option<&'a str>,
    /// The template selected before (S-06): kept while it stays usable.
    pub current: Option<&'a ResolvedReference>,
    /// Templates in the service's namespace and cluster templates (any order; other models' are ignored).
    pub candidates: Vec<Candidate<'a>>,
    pub inventory: &'a Inventory,
}

/// The outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    /// Run this template.
    Selected {
        template: ResolvedReference,
        message: String,
    },
    /// S-04: nothing usable yet, but a candidate is still Pending/Progressing: the service is `Starting`.
    Waiting { message: String },
    /// S-02: the named template does not exist.
    NotFound { message: String },
    /// S-03: no candidate can run (none Ready, or their GPU is absent).
    NoneUsable { message: String },
    /// S-03: several candidates are equally good; their names are in the message.
    Ambiguous { names: Vec<String>, message: String },
}

/// The choice plus one line per candidate (`status.templateCandidates`), sorted namespace first, then by
/// name.
#[derive(Debug, Clone, PartialEq)]
pub struct SelectionResult {
    pub selection: Selection,
    pub candidates: Vec<TemplateCandidate>,
}

fn reference(c: &Candidate<'_>) -> ResolvedReference {
    ResolvedReference {
        name: c.name.to_string(),
        namespace: c.namespace.map(str::to_string),
        scope: match c.scope {
            TemplateScope::Namespace => ReferenceScope::Namespace,
            TemplateScope::Cluster => ReferenceScope::Cluster,
        },
        kind: match c.scope {
            TemplateScope::Namespace => "AIMServiceTemplate",
            TemplateScope::Cluster => "AIMClusterServiceTemplate",
        }
        .to_string(),
        uid: c.uid.map(str::to_string),
    }
}

fn label(c: &Candidate<'_>) -> String {
    match c.scope {
        TemplateScope::Namespace => format!("AIMServiceTemplate {}", c.name),
        TemplateScope::Cluster => format!("AIMClusterServiceTemplate {}", c.name),
    }
}

fn is_current(c: &Candidate<'_>, current: Option<&ResolvedReference>) -> bool {
    current.is_some_and(|r| {
        r.name == c.name
            && matches!(
                (r.scope, c.scope),
                (ReferenceScope::Namespace, TemplateScope::Namespace)
                    | (ReferenceScope::Cluster, TemplateScope::Cluster)
            )
    })
}

/// Why a candidate cannot run now, or `None` when it can.
fn exclusion(c: &Candidate<'_>, inventory: &Inventory) -> Option<String> {
    match c.phase {
        Some(TemplatePhase::Ready) => {}
        other => {
            let phase = other.map(|p| p.as_str()).unwrap_or("without status");
            return Some(match c.ready_message {
                Some(m) if !m.is_empty() => format!("{phase}, not Ready: {m}"),
                _ => format!("{phase}, not Ready"),
            });
        }
    }
    let gpu = c.resolved_hardware.and_then(|h| h.gpu.as_ref());
    match availability(gpu, inventory) {
        Ok(Availability::Available { .. }) => None,
        Ok(Availability::NotAvailable { message, .. }) => {
            Some(format!("its GPU is not in the cluster: {message}"))
        }
        Err(e) => Some(format!("its hardware cannot be placed: {e}")),
    }
}

fn still_coming(c: &Candidate<'_>) -> bool {
    matches!(
        c.phase,
        None | Some(TemplatePhase::Pending | TemplatePhase::Progressing)
    )
}

/// S-02, S-03, S-04, S-06.
pub fn select(input: &SelectionInput<'_>) -> SelectionResult {
    // Only this model's templates: the service namespace's and the cluster's.
    let mut cands: Vec<&Candidate<'_>> = input
        .candidates
        .iter()
        .filter(|c| c.model_name == input.model_name || input.template_name == Some(c.name))
        .filter(|c| match c.scope {
            TemplateScope::Namespace => c.namespace == Some(input.service_namespace),
            TemplateScope::Cluster => true,
        })
        .collect();
    cands.sort_by(|a, b| {
        (a.scope != TemplateScope::Namespace, a.name)
            .cmp(&(b.scope != TemplateScope::Namespace, b.name))
    });
    cands.dedup_by(|a, b| a.scope == b.scope && a.name == b.name);

    // S-02: a named template, namespace first, then cluster.
    if let Some(wanted) = input.template_name {
        let named: Vec<&&Candidate<'_>> = cands.iter().filter(|c| c.name == wanted).collect();
        let Some(chosen) = named.first() else {
            return SelectionResult {
                selection: Selection::NotFound {
                    message: format!(
                        "no AIMServiceTemplate {wanted:?} in namespace {:?} and no AIMClusterServiceTemplate {wanted:?}",
                        input.service_namespace
                    ),
                },
                candidates: Vec::new(),
            };
        };
        let why = exclusion(chosen, input.inventory);
        let selection = match &why {
            None => Selection::Selected {
                template: reference(chosen),
                message: format!("{} (named in spec.template.name)", label(chosen)),
            },
            Some(w) if still_coming(chosen) => Selection::Waiting {
                message: format!("{} is {w}", label(chosen)),
            },
            Some(w) => Selection::NoneUsable {
                message: format!("{} cannot run: {w}", label(chosen)),
            },
        };
        let candidates = vec![TemplateCandidate {
            name: chosen.name.to_string(),
            scope: chosen.scope,
            status: chosen.phase,
            selected: why.is_none(),
            reason: Some(why.unwrap_or_else(|| "named in spec.template.name".into())),
        }];
        return SelectionResult {
            selection,
            candidates,
        };
    }

    // S-03: every candidate with its verdict.
    let verdicts: Vec<(&Candidate<'_>, Option<String>)> = cands
        .iter()
        .map(|c| (*c, exclusion(c, input.inventory)))
        .collect();
    let usable: Vec<&Candidate<'_>> = verdicts
        .iter()
        .filter(|(_, why)| why.is_none())
        .map(|(c, _)| *c)
        .collect();
    // S-06: the template in use stays while it is usable, even when another became Ready too.
    let keep = usable
        .iter()
        .find(|c| is_current(c, input.current))
        .copied();
    // The same words whether or not it was selected before, so a second look writes nothing new.
    let chosen = match (keep, usable.as_slice()) {
        (_, [only]) => Some((*only, "the only Ready template with its GPU in the cluster")),
        (Some(c), _) => Some((c, "in use, and still Ready with its GPU in the cluster")),
        _ => None,
    };
    let names: Vec<String> = usable.iter().map(|c| label(c)).collect();
    let candidates: Vec<TemplateCandidate> = verdicts
        .iter()
        .map(|(c, why)| {
            let selected = chosen.is_some_and(|(s, _)| std::ptr::eq(s, *c));
            let reason = match (why, chosen) {
                (Some(w), _) => w.clone(),
                (None, Some((s, r))) if std::ptr::eq(s, *c) => r.to_string(),
                (None, Some((s, _))) => format!("Ready, but {} is in use", label(s)),
                (None, None) => format!(
                    "Ready, as is {}: set spec.template.name to choose",
                    names
                        .iter()
                        .filter(|n| **n != label(c))
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            TemplateCandidate {
                name: c.name.to_string(),
                scope: c.scope,
                status: c.phase,
                selected,
                reason: Some(reason),
            }
        })
        .collect();
    let listing = || {
        verdicts
            .iter()
            .map(|(c, why)| format!("{}: {}", label(c), why.as_deref().unwrap_or("Ready")))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let selection = match chosen {
        Some((c, why)) => Selection::Selected {
            template: reference(c),
            message: format!("{}: {why}", label(c)),
        },
        None if usable.len() > 1 => Selection::Ambiguous {
            names: names.clone(),
            message: format!(
                "{} templates are Ready for model {:?}: {}; set spec.template.name to choose one",
                usable.len(),
                input.model_name,
                names.join(", ")
            ),
        },
        None if verdicts.is_empty() => Selection::NoneUsable {
            message: format!(
                "no template for model {:?} in namespace {:?} or the cluster",
                input.model_name, input.service_namespace
            ),
        },
        None if verdicts.iter().any(|(c, _)| still_coming(c)) => Selection::Waiting {
            message: format!("waiting for a template to become Ready: {}", listing()),
        },
        None => Selection::NoneUsable {
            message: format!(
                "no template for model {:?} can run: {}",
                input.model_name,
                listing()
            ),
        },
    };
    SelectionResult {
        selection,
        candidates,
    }
}
