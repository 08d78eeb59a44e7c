"""The model card's reporting section: which items of the TRIPOD+AI checklist (Collins et al.,
BMJ 2024;385:e078378, version of 11 January 2024) the card reports, where, and which it does not
and why, so that a reviewer sees what is reported and what is not.

A card documents one version of a model that is updated batch by batch, not a study: the items
about a publication, its authors and its ethics review are the deploying hospital's to report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

CHECKLIST = "TRIPOD+AI (Collins et al., BMJ 2024;385:e078378)"

Status = Literal["covered", "partly", "not covered"]


@dataclass(frozen=True)
class Item:
    number: str  # as the checklist numbers it: "12e", "23a"
    topic: str  # the checklist's topic name
    status: Status
    where: tuple[str, ...]  # the card's sections (model_card.json keys) that report it
    note: str  # how it is reported, or why it is not


ITEMS: tuple[Item, ...] = (
    Item("1", "Title", "covered", ("model", "intended_use"),
         "the card's title names the model and version; the purpose names the target "
         "population (adult inpatients with diabetes) and the outcome (30-day readmission)"),
    Item("2", "Abstract", "not covered", (),
         "a card is not a publication: no structured abstract (TRIPOD+AI for Abstracts)"),
    Item("3a", "Background", "covered", ("intended_use", "published_range"),
         "prognostic use at discharge to prioritise follow-up; the ROC-AUC range of published "
         "models on this data set"),
    Item("3b", "Background", "covered", ("intended_use",),
         "target population, purpose in the care pathway, intended users, out-of-scope uses"),
    Item("3c", "Background", "not covered", (),
         "known health inequalities between groups are not described; the card reports "
         "performance per group (items 14, 23a), not their background"),
    Item("4", "Objectives", "covered", ("model",),
         "each version is developed (warm-started from its parent) and evaluated on the holdout"),
    Item("5a", "Data", "covered", ("data", "limitations"),
         "the source and the batches trained on; representativeness in the limitations "
         "(130 US hospitals, 1999-2008)"),
    Item("5b", "Data", "partly", ("data", "limitations"),
         "encounter id ranges and the years 1999-2008; the data set has no encounter dates"),
    Item("6a", "Participants", "partly", ("limitations",),
         "130 US hospitals (inpatient care); the data set does not say which"),
    Item("6b", "Participants", "not covered", (),
         "the data set's inclusion criteria (diabetic inpatient encounters of 1-14 days) are "
         "the source's, not restated; the row checks that quarantine bad rows are in "
         "readmission.data.validation"),
    Item("6c", "Participants", "not covered", (),
         "medications and their changes are predictors; no treatment is handled otherwise"),
    Item("7", "Data preparation", "not covered", (),
         "row validation and quarantine counts are in the warehouse's ingest reports, not in "
         "the card, and are not compared across groups"),
    Item("8a", "Outcome", "partly", ("intended_use", "limitations"),
         "readmission within 30 days of discharge; the limitations say it counts readmissions "
         "within the source's hospitals only"),
    Item("8b", "Outcome", "not covered", (),
         "the outcome is an administrative record: no assessor interprets it"),
    Item("8c", "Outcome", "not covered", (),
         "no blinding: the outcome is an administrative record"),
    Item("9a", "Predictors", "not covered", (),
         "the choice of predictors is fixed in code (readmission.features), not argued in the "
         "card"),
    Item("9b", "Predictors", "partly", ("model",),
         "the kinds of features are named; their definitions are in readmission.features, "
         "identified by the feature-space fingerprint of the version's run"),
    Item("9c", "Predictors", "not covered", (),
         "predictors are recorded data: no assessor interprets them"),
    Item("10", "Sample size", "partly", ("data", "holdout"),
         "training rows and holdout size are reported; no sample size calculation is made"),
    Item("11", "Missing data", "not covered", (),
         "missing values are levels of their categorical features (readmission.features); the "
         "card does not report how many there were"),
    Item("12a", "Analytical methods", "covered", ("data", "holdout"),
         "batches for training, a holdout of patients never trained on, fixed for the lineage"),
    Item("12b", "Analytical methods", "covered", ("model",),
         "one-hot categories, ICD-9 groups, scaled counts"),
    Item("12c", "Analytical methods", "covered", ("model", "parameters", "holdout"),
         "logistic regression by SGD, warm-started batch by batch; its hyperparameters; "
         "evaluation on the patient holdout with a patient-level bootstrap (hyperparameters "
         "are chosen by `readmission tune`, not per version)"),
    Item("12d", "Analytical methods", "not covered", (),
         "the data set has no hospital identifier: heterogeneity across hospitals cannot be "
         "estimated"),
    Item("12e", "Analytical methods", "covered", ("holdout", "calibration", "threshold"),
         "discrimination (ROC-AUC with CI, PR-AUC), calibration (intercept, slope, ECE, plot), "
         "Brier, log-loss, performance at the threshold; no clinical-utility (decision curve) "
         "analysis"),
    Item("12f", "Analytical methods", "covered", ("model", "change_control"),
         "updating is the warm start of each version from its parent, under the change control "
         "plan's rules; no recalibration"),
    Item("12g", "Analytical methods", "covered", ("model",),
         "predictions come from the version's logged MLflow model (run id), as served"),
    Item("13", "Class imbalance", "covered", ("threshold",),
         "no class-imbalance method: the model is fitted on the observed prevalence and the "
         "threshold is chosen on the holdout"),
    Item("14", "Fairness", "covered", ("subgroups", "change_control"),
         "performance per race, gender and age band; a subgroup below its AUC floor needs a "
         "person's decision under the change control plan"),
    Item("15", "Model output", "covered", ("threshold",),
         "a probability, and the flag at the threshold with its policy and how it was chosen"),
    Item("16", "Training versus evaluation", "covered", ("data",),
         "training and holdout come from the same source; the holdout is other patients"),
    Item("17", "Ethical approval", "not covered", (),
         "a public, de-identified data set; approval for local use is the deploying hospital's"),
    Item("18a", "Funding", "not covered", (), "a project matter, not one of a version"),
    Item("18b", "Conflicts of interest", "not covered", (),
         "a project matter, not one of a version"),
    Item("18c", "Protocol", "covered", ("change_control",),
         "the change control plan (its sha256) is the protocol each update follows"),
    Item("18d", "Registration", "not covered", (), "the model is not registered in a registry"),
    Item("18e", "Data sharing", "covered", ("data",), "the public data source is named"),
    Item("18f", "Code sharing", "not covered", (),
         "the code is open source, but the card does not name the commit that trained it"),
    Item("19", "Patient & Public Involvement", "not covered", (),
         "no patient or public involvement"),
    Item("20a", "Participants", "partly", ("data", "holdout"),
         "rows per batch and holdout encounters, patients and readmissions; quarantined rows "
         "are not in the card"),
    Item("20b", "Participants", "partly", ("subgroups",),
         "size and prevalence per race, gender and age band; no table of predictors or "
         "missing data"),
    Item("20c", "Participants", "not covered", (),
         "predictor distributions of the holdout are not compared with the training batches"),
    Item("21", "Model development", "partly", ("data", "holdout"),
         "training rows, holdout rows and readmissions; readmissions in training are not given"),
    Item("22", "Model specification", "covered", ("model", "parameters"),
         "the full model is the version's MLflow model (run id), open to load and score"),
    Item("23a", "Model performance", "covered", ("holdout", "subgroups", "calibration"),
         "ROC-AUC with a 95% bootstrap interval, overall and per subgroup; calibration plot"),
    Item("23b", "Model performance", "not covered", (),
         "no hospital identifier: no heterogeneity across clusters (see 12d)"),
    Item("24", "Model updating", "covered", ("model", "change_control", "holdout"),
         "each card is an updated model: its parent, the rules of the plan that applied, and "
         "its performance"),
    Item("25", "Interpretation", "not covered", (),
         "a card reports, it does not interpret; the published range gives context"),
    Item("26", "Limitations", "covered", ("limitations",),
         "fixed caveats and those the version's numbers raise"),
    Item("27a", "Usability of the model in the context of current care", "not covered", (),
         "bad input is refused with the field named (docs/api.md), not described in the card"),
    Item("27b", "Usability of the model in the context of current care", "covered",
         ("intended_use",),
         "users are care-management teams; no use without a person reviewing the flag"),
    Item("27c", "Usability of the model in the context of current care", "not covered", (),
         "next steps for research are not a matter of one version"),
)  # fmt: skip


def section() -> dict[str, Any]:
    """The card's `reporting` section."""
    return {
        "checklist": CHECKLIST,
        "items": [
            {
                "item": i.number,
                "topic": i.topic,
                "status": i.status,
                "where": list(i.where),
                "note": i.note,
            }
            for i in ITEMS
        ],
    }
