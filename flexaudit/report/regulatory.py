"""Which report section and which gate control serve which regulatory obligation.

The mapping is design advice derived from ../shared/reference/compliance.md §2 and §6 (EU AI Act
Annex IV point 2 and Annex XI, GDPR Art. 35(7), EDPB Opinion 28/2024, NIST AI RMF MEASURE 2.10,
NIST SP 800-226). It is rendered as the report's regulatory-mapping appendix; the wording of each
obligation is a paraphrase, and every rendered appendix says so: check it against the official texts
before relying on it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

#: Report sections, in document order: (anchor id used by the templates, title).
SECTIONS: tuple[tuple[str, str], ...] = (
    ("document-control", "Document control"),
    ("summary", "Executive summary and gate decision"),
    ("subject", "Subject binding"),
    ("intended-use", "Intended use and opt-out"),
    ("data", "Data description"),
    ("training", "Training procedure"),
    ("guarantee", "Formal privacy guarantee"),
    ("empirical", "Empirical privacy evaluation"),
    ("controls", "Policy evaluation"),
    ("dpia", "Data-protection impact assessment"),
    ("limitations", "Limitations"),
    ("regulatory", "Regulatory mapping"),
    ("integrity", "Integrity and sign-off"),
)


@dataclass(frozen=True)
class Obligation:
    id: str             # stable id used by policies' maps_to and SARIF tags
    framework: str
    reference: str
    obligation: str     # paraphrase
    sections: tuple[str, ...]
    controls: tuple[str, ...] = ()
    source: str = ""

    def as_dict(self) -> dict:
        d = asdict(self)
        d["sections"], d["controls"] = list(self.sections), list(self.controls)
        return d


_MIA = ("PRIV-MIA-TPR", "PRIV-MIA-AUC")
_EXT = ("PRIV-EXT-DISC", "PRIV-EXT-SAMPLED", "PRIV-EXT-PROB", "PRIV-EXT-CANARY", "PRIV-EXT-PII", "PRIV-EXT-PII-INF")
_DP = ("PRIV-DP-EPSILON", "PRIV-DP-AUDIT")

OBLIGATIONS: tuple[Obligation, ...] = (
    Obligation("EU-AIA-AnnexIV-2c", "EU AI Act (Reg. 2024/1689)", "Annex IV point 2(c)",
               "Description of the system architecture and the computational resources used to develop it.",
               ("training", "subject"), (), "https://aiact.annotated.nl/en/aiact/annex/iv/2/"),
    Obligation("EU-AIA-AnnexIV-2d", "EU AI Act (Reg. 2024/1689)", "Annex IV point 2(d)",
               "Data requirements: datasheets describing the training data, its provenance, scope and main "
               "characteristics, how it was obtained and selected, and cleaning methodologies.",
               ("data", "training"), (), "https://aiact.annotated.nl/en/aiact/annex/iv/2/d/"),
    Obligation("EU-AIA-AnnexIV-2g", "EU AI Act (Reg. 2024/1689)", "Annex IV point 2(g)",
               "Validation and testing procedures, metrics, test logs and test reports dated and signed by the "
               "responsible persons.",
               ("empirical", "controls", "document-control", "integrity"), _MIA + _EXT + ("PRIV-HYG-BLIND",),
               "https://aiact.annotated.nl/en/aiact/annex/iv/2/g/"),
    Obligation("EU-AIA-AnnexIV-2h", "EU AI Act (Reg. 2024/1689)", "Annex IV point 2(h)",
               "Cybersecurity measures put in place.",
               ("subject", "integrity"), ("PRIV-INT-DIGEST", "PRIV-INT-FORMAT"),
               "https://aiact.annotated.nl/en/aiact/annex/iv/2/"),
    Obligation("EU-AIA-AnnexXI", "EU AI Act (Reg. 2024/1689)", "Annex XI (Art. 53(1)(a))",
               "For general-purpose models: training data type, provenance, curation, number of data points; "
               "evaluation strategies and results, including adversarial testing.",
               ("data", "training", "empirical"), _MIA + _EXT,
               "https://clearact.net/en/eu-ai-act/annex-xi-technical-documentation-for-general-purpose-ai-models"),
    Obligation("GDPR-35-7a", "GDPR", "Art. 35(7)(a)",
               "Systematic description of the envisaged processing operations and their purposes.",
               ("intended-use", "data", "training", "dpia"), (), "https://gdprhub.eu/index.php?title=Article_35_GDPR"),
    Obligation("GDPR-35-7b", "GDPR", "Art. 35(7)(b)",
               "Assessment of the necessity and proportionality of the processing in relation to the purposes.",
               ("intended-use", "dpia"), (), "https://gdprhub.eu/index.php?title=Article_35_GDPR"),
    Obligation("GDPR-35-7c", "GDPR", "Art. 35(7)(c)",
               "Assessment of the risks to the rights and freedoms of data subjects.",
               ("empirical", "dpia", "controls"), _MIA + _EXT, "https://gdprhub.eu/index.php?title=Article_35_GDPR"),
    Obligation("GDPR-35-7d", "GDPR", "Art. 35(7)(d)",
               "Measures envisaged to address the risks, including safeguards and mechanisms to demonstrate "
               "compliance.",
               ("guarantee", "controls", "intended-use", "integrity", "dpia"), _DP + ("PRIV-INT-DIGEST",),
               "https://gdprhub.eu/index.php?title=Article_35_GDPR"),
    Obligation("EDPB-28-2024", "EDPB Opinion 28/2024", "anonymity of AI models",
               "A model trained on personal data is anonymous only if the likelihood of extracting personal data "
               "about training subjects, directly or through queries, is insignificant, shown with evidence such "
               "as resistance to extraction and membership inference.",
               ("empirical", "controls", "dpia"), _MIA + _EXT,
               "https://iapp.org/news/a/edpb-weighs-in-on-key-questions-on-personal-data-in-ai-models"),
    Obligation("NIST-RMF-MEASURE-2.10", "NIST AI RMF 1.0", "MEASURE 2.10",
               "Privacy risk of the AI system is examined and documented, with testing evidence, an owner and the "
               "residual risk.",
               ("empirical", "dpia", "limitations"), _MIA + _EXT,
               "https://learn.daydream.ai/requirements/nist-ai-rmf-airmf-55"),
    Obligation("NIST-SP-800-226", "NIST SP 800-226", "evaluating DP guarantees",
               "A differential-privacy claim states its parameters (epsilon, delta), variant, unit of privacy, "
               "accounting method and trust model.",
               ("guarantee", "data"), _DP, "https://doi.org/10.6028/NIST.SP.800-226"),
)

CAVEAT = ("This mapping paraphrases the obligations (after compliance reference notes, not the official "
          "texts) and is design advice, not legal advice: check each item against the Official Journal text "
          "of Reg. 2024/1689, the GDPR and the NIST publications before relying on it.")


def obligations_for_control(rule_id: str) -> list[str]:
    return [o.id for o in OBLIGATIONS if rule_id in o.controls]


def section_title(anchor: str) -> str:
    return dict(SECTIONS)[anchor]
