//! Every Microsoft example response we keep (tests/fixtures/arm-examples, verbatim copies of
//! the examples in Microsoft's REST API specs) deserialises into the SDK model the code and the simulator use.

use azure_mgmt_compute::package_2024_07_01::models as compute;
use azure_mgmt_network::package_2024_03::models as network;
use azure_mgmt_resourcehealth::package_2024_02::models as health;
use serde::de::DeserializeOwned;
use std::path::Path;

type Parser = fn(serde_json::Value) -> Result<(), String>;

fn parse<T: DeserializeOwned>(body: serde_json::Value) -> Result<(), String> {
    serde_json::from_value::<T>(body)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn no_body(body: serde_json::Value) -> Result<(), String> {
    if body.is_null() {
        Ok(())
    } else {
        Err(format!("expected no body, got {body}"))
    }
}

/// file -> the model of its response bodies
const MODELS: &[(&str, Parser)] = &[
    (
        "compute/RunCommand_Get.json",
        parse::<compute::RunCommandDocument>,
    ),
    (
        "compute/RunCommand_List.json",
        parse::<compute::RunCommandListResult>,
    ),
    (
        "compute/VirtualMachineExtension_CreateOrUpdate_MaximumSet_Gen.json",
        parse::<compute::VirtualMachineExtension>,
    ),
    (
        "compute/VirtualMachineExtension_Get_MaximumSet_Gen.json",
        parse::<compute::VirtualMachineExtension>,
    ),
    (
        "compute/VirtualMachineExtension_List_MaximumSet_Gen.json",
        parse::<compute::VirtualMachineExtensionsListResult>,
    ),
    (
        "compute/VirtualMachineRunCommand.json",
        parse::<compute::RunCommandResult>,
    ),
    (
        "compute/VirtualMachine_Get.json",
        parse::<compute::VirtualMachine>,
    ),
    (
        "compute/VirtualMachine_Get_InstanceView.json",
        parse::<compute::VirtualMachineInstanceView>,
    ),
    (
        "compute/VirtualMachine_Get_WithVMSizeProperties.json",
        parse::<compute::VirtualMachine>,
    ),
    (
        "compute/VirtualMachine_ListAll_MaximumSet_Gen.json",
        parse::<compute::VirtualMachineListResult>,
    ),
    (
        "compute/VirtualMachine_List_MaximumSet_Gen.json",
        parse::<compute::VirtualMachineListResult>,
    ),
    (
        "compute/VirtualMachine_List_MinimumSet_Gen.json",
        parse::<compute::VirtualMachineListResult>,
    ),
    (
        "compute/VirtualMachine_Redeploy_MaximumSet_Gen.json",
        no_body,
    ),
    (
        "compute/VirtualMachine_Restart_MaximumSet_Gen.json",
        no_body,
    ),
    (
        "compute/VirtualMachine_RetrieveBootDiagnosticsData.json",
        parse::<compute::RetrieveBootDiagnosticsDataResult>,
    ),
    ("compute/VirtualMachine_Start_MaximumSet_Gen.json", no_body),
    (
        "network/NetworkInterfaceEffectiveNSGList.json",
        parse::<network::EffectiveNetworkSecurityGroupListResult>,
    ),
    (
        "network/NetworkInterfaceGet.json",
        parse::<network::NetworkInterface>,
    ),
    (
        "network/NetworkSecurityGroupGet.json",
        parse::<network::NetworkSecurityGroup>,
    ),
    (
        "network/NetworkWatcherIpFlowVerify.json",
        parse::<network::VerificationIpFlowResult>,
    ),
    (
        "network/NetworkWatcherListAll.json",
        parse::<network::NetworkWatcherListResult>,
    ),
    (
        "network/PublicIpAddressGet.json",
        parse::<network::PublicIpAddress>,
    ),
    ("network/SubnetGet.json", parse::<network::Subnet>),
    (
        "network/VirtualNetworkGet.json",
        parse::<network::VirtualNetwork>,
    ),
    (
        "network/VirtualNetworkPeeringGet.json",
        parse::<network::VirtualNetworkPeering>,
    ),
    (
        "network/BastionHostListBySubscription.json",
        parse::<network::BastionHostListResult>,
    ),
    (
        "resourcehealth/AvailabilityStatus_GetByResource.json",
        parse::<health::AvailabilityStatus>,
    ),
    (
        "resourcehealth/AvailabilityStatuses_List.json",
        parse::<health::AvailabilityStatusListResult>,
    ),
];

#[test]
fn every_example_response_parses_into_its_model() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/arm-examples");
    let mut seen = 0;
    for dir in ["compute", "network", "resourcehealth"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("fixture dir") {
            let path = entry.expect("dir entry").path();
            let name = format!("{dir}/{}", path.file_name().unwrap().to_string_lossy());
            let parser = MODELS
                .iter()
                .find(|(file, _)| *file == name)
                .unwrap_or_else(|| panic!("{name} has no model in MODELS"))
                .1;
            let example: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let responses = example["responses"].as_object().expect("responses");
            assert!(!responses.is_empty(), "{name} has no responses");
            for (status, response) in responses {
                // A 202 without a body only says "accepted; poll the Location".
                if status != "200" && response["body"].is_null() {
                    continue;
                }
                parser(response["body"].clone())
                    .unwrap_or_else(|e| panic!("{name} response {status}: {e}"));
            }
            seen += 1;
        }
    }
    assert_eq!(seen, MODELS.len(), "every model entry has its file");
}

#[test]
fn a_model_mismatch_is_detected() {
    // The harness can fail: a VM body is not an effective-NSG list.
    let body = serde_json::json!({"value": [{"networkSecurityGroup": 5}]});
    assert!(parse::<network::EffectiveNetworkSecurityGroupListResult>(body).is_err());
}
