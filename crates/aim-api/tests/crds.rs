//! Every CRD's schema is pinned by a snapshot, and checked for what the API server requires.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};

fn walk<'a>(path: &str, s: &'a JSONSchemaProps, out: &mut Vec<(String, &'a JSONSchemaProps)>) {
    out.push((path.to_string(), s));
    for (k, v) in s.properties.iter().flatten() {
        walk(&format!("{path}.{k}"), v, out);
    }
    if let Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(items)) = &s.items {
        walk(&format!("{path}[]"), items, out);
    }
    if let Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrBool::Schema(ap)) = &s.additional_properties {
        walk(&format!("{path}{{}}"), ap, out);
    }
}

fn schema(crd: &CustomResourceDefinition) -> &JSONSchemaProps {
    crd.spec.versions[0]
        .schema
        .as_ref()
        .unwrap()
        .open_api_v3_schema
        .as_ref()
        .unwrap()
}

#[test]
fn crd_schemas_are_pinned() {
    for crd in aim_api::crds() {
        let name = crd.metadata.name.clone().unwrap();
        insta::assert_yaml_snapshot!(name, crd);
    }
}

#[test]
fn schemas_are_structural() {
    for crd in aim_api::crds() {
        let name = crd.metadata.name.clone().unwrap();
        let mut nodes = Vec::new();
        walk("", schema(&crd), &mut nodes);
        for (path, s) in nodes {
            // Structural schemas: every node has a type, except int-or-string and preserve-unknown nodes;
            // no oneOf/anyOf/allOf carrying types.
            let typed = s.type_.is_some()
                || s.x_kubernetes_int_or_string == Some(true)
                || s.x_kubernetes_preserve_unknown_fields == Some(true);
            assert!(typed, "{name}{path}: node without a type");
            assert!(
                s.one_of.is_none() && s.any_of.is_none() && s.all_of.is_none(),
                "{name}{path}: combinator"
            );
            if let Some(list_keys) = &s.x_kubernetes_list_map_keys {
                let item = match &s.items {
                    Some(k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(i)) => i,
                    _ => panic!("{name}{path}: list-map without items"),
                };
                for key in list_keys {
                    let required = item.required.iter().flatten().any(|r| r == key);
                    assert!(
                        required,
                        "{name}{path}: list-map key {key} must be required"
                    );
                }
            }
        }
    }
}

#[test]
fn every_kind_has_status_subresource_short_name_and_category() {
    let expected = [
        ("AIMServiceTemplate", "Namespaced", "aimtpl"),
        ("AIMClusterServiceTemplate", "Cluster", "aimcltpl"),
        ("AIMModel", "Namespaced", "aimmdl"),
        ("AIMClusterModel", "Cluster", "aimclmdl"),
        ("AIMRuntimeConfig", "Namespaced", "aimrc"),
        ("AIMClusterRuntimeConfig", "Cluster", "aimclrc"),
        ("AIMTemplateCache", "Namespaced", "aimtc"),
        ("AIMService", "Namespaced", "aimsvc"),
    ];
    let crds = aim_api::crds();
    assert_eq!(crds.len(), expected.len());
    for (crd, (kind, scope, short)) in crds.iter().zip(expected) {
        assert_eq!(crd.spec.names.kind, kind);
        assert_eq!(crd.spec.scope, scope, "{kind}");
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&[short.to_string()][..]),
            "{kind}"
        );
        assert_eq!(
            crd.spec.names.categories.as_deref(),
            Some(&["aim".to_string()][..]),
            "{kind}"
        );
        let v = &crd.spec.versions[0];
        assert!(
            v.subresources.as_ref().unwrap().status.is_some(),
            "{kind}: status subresource"
        );
        let status = &schema(crd).properties.as_ref().unwrap()["status"];
        let props = status.properties.as_ref().unwrap();
        for field in ["observedGeneration", "status", "conditions"] {
            assert!(props.contains_key(field), "{kind}: status.{field}");
        }
        let conds = &props["conditions"];
        assert_eq!(
            conds.x_kubernetes_list_type.as_deref(),
            Some("map"),
            "{kind}: conditions list-map"
        );
        assert_eq!(
            conds.x_kubernetes_list_map_keys.as_deref(),
            Some(&["type".to_string()][..])
        );
    }
}

#[test]
fn status_types_carry_no_validation_rules() {
    // T-19: the controller can never write a status its own CRD rejects because of a spec rule.
    for crd in aim_api::crds() {
        let status = &schema(&crd).properties.as_ref().unwrap()["status"];
        let mut nodes = Vec::new();
        walk(".status", status, &mut nodes);
        for (path, s) in nodes {
            assert!(
                s.x_kubernetes_validations.is_none(),
                "{}{path}: CEL rule in status",
                crd.metadata.name.as_ref().unwrap()
            );
            assert!(
                s.pattern.is_none(),
                "{}{path}: pattern in status",
                crd.metadata.name.as_ref().unwrap()
            );
        }
    }
}

#[test]
fn template_rules_of_t33_are_in_the_schema() {
    // T-33: each rule is present where the API server will evaluate it.
    let crd = aim_api::crds()
        .into_iter()
        .find(|c| c.spec.names.kind == "AIMServiceTemplate")
        .unwrap();
    let yaml = serde_json::to_string(&crd).unwrap();
    for needle in [
        "modelName is immutable",
        "metric is immutable once set",
        "precision is immutable once set",
        "hardware is immutable once set",
        "gpu.model and gpu.minVram are mutually exclusive",
        "hardware must set gpu, cpu, or both",
        r#"^(hf|s3)://\\S+$"#,
        "set exactly one of name or modelId",
        "set exactly one of sourceURI or sourceUri",
    ] {
        assert!(yaml.contains(needle), "missing {needle}");
    }
    let svc = aim_api::crds()
        .into_iter()
        .find(|c| c.spec.names.kind == "AIMService")
        .unwrap();
    assert!(
        serde_json::to_string(&svc)
            .unwrap()
            .contains("set exactly one of model.name or model.image")
    );
}
