"""The clinical domain: synthetic US clinical notes (progress, ED, discharge, phone, referral, reminder letters).

The appointment reminder is the domain's form letter (see `synthetic` for the duplication profile): the same
wording for every patient, the patient's name, address, record number and appointment in its fields."""

from __future__ import annotations

import datetime as dt
import random
import re

from flexaudit.data.builtin.registry import DomainSpec, register
from flexaudit.data.builtin.synthetic import (
    Person,
    RecordWriter,
    date_between,
    fmt_date,
    fresh_number,
    make_person,
    record_count,
    staff,
    synthetic_builder,
)

# (ICD-10-CM code, description, [medication, dose and frequency options], plan phrases)
_CHRONIC = [
    ("E11.9", "Type 2 diabetes mellitus without complications",
     ["metformin 500 mg twice daily", "metformin 1000 mg twice daily", "empagliflozin 10 mg daily"],
     ["Recheck HbA1c in 3 months.", "Reinforced carbohydrate counting and foot care.",
      "Annual retinal exam ordered."]),
    ("I10", "Essential (primary) hypertension",
     ["lisinopril 10 mg daily", "amlodipine 5 mg daily", "losartan 50 mg daily",
      "hydrochlorothiazide 25 mg daily"],
     ["Home blood pressure log for two weeks.", "Reduce dietary sodium.", "BMP in 2 weeks after dose change."]),
    ("E78.5", "Hyperlipidemia, unspecified",
     ["atorvastatin 20 mg nightly", "atorvastatin 40 mg nightly", "rosuvastatin 10 mg daily"],
     ["Fasting lipid panel before next visit.", "Discussed Mediterranean-style diet."]),
    ("J45.909", "Unspecified asthma, uncomplicated",
     ["albuterol HFA 90 mcg 2 puffs every 4-6 hours as needed", "fluticasone 110 mcg 2 puffs twice daily"],
     ["Reviewed inhaler technique with spacer.", "Asthma action plan updated."]),
    ("F32.9", "Major depressive disorder, single episode, unspecified",
     ["sertraline 50 mg daily", "escitalopram 10 mg daily", "bupropion XL 150 mg daily"],
     ["PHQ-9 repeated today; referral to behavioral health.", "Safety plan reviewed; denies SI."]),
    ("F41.1", "Generalized anxiety disorder",
     ["buspirone 10 mg twice daily", "sertraline 25 mg daily"],
     ["GAD-7 score tracked.", "Encouraged CBT; provided list of therapists."]),
    ("E03.9", "Hypothyroidism, unspecified",
     ["levothyroxine 50 mcg daily", "levothyroxine 75 mcg daily", "levothyroxine 100 mcg daily"],
     ["TSH in 6 weeks.", "Take on an empty stomach, separate from calcium and iron."]),
    ("I48.91", "Unspecified atrial fibrillation",
     ["apixaban 5 mg twice daily", "metoprolol succinate 25 mg daily", "diltiazem ER 120 mg daily"],
     ["CHA2DS2-VASc reviewed; continue anticoagulation.", "Echocardiogram ordered."]),
    ("J44.9", "Chronic obstructive pulmonary disease, unspecified",
     ["tiotropium 18 mcg inhaled daily", "budesonide-formoterol 160/4.5 mcg 2 puffs twice daily"],
     ["Pulmonary rehab referral.", "Smoking cessation counselling, 5 minutes."]),
    ("M17.11", "Unilateral primary osteoarthritis, right knee",
     ["acetaminophen 650 mg every 6 hours as needed", "meloxicam 7.5 mg daily", "diclofenac 1% gel four times daily"],
     ["Physical therapy referral.", "Discussed intra-articular steroid injection."]),
    ("K21.9", "Gastro-esophageal reflux disease without esophagitis",
     ["omeprazole 20 mg daily", "pantoprazole 40 mg daily", "famotidine 20 mg at bedtime"],
     ["Avoid late meals; elevate head of bed.", "Trial off PPI in 8 weeks."]),
    ("N18.30", "Chronic kidney disease, stage 3 unspecified",
     ["dapagliflozin 10 mg daily", "sodium bicarbonate 650 mg twice daily"],
     ["eGFR and urine albumin-creatinine ratio in 3 months.", "Nephrology referral placed."]),
    ("G43.909", "Migraine, unspecified, not intractable, without status migrainosus",
     ["sumatriptan 50 mg at onset, may repeat once in 2 hours", "propranolol 40 mg twice daily"],
     ["Headache diary.", "Limit acute medication to 2 days per week."]),
    ("M54.50", "Low back pain, unspecified",
     ["cyclobenzaprine 5 mg at bedtime as needed", "ibuprofen 400 mg three times daily with food"],
     ["Core strengthening exercises.", "Return if numbness, weakness or bladder changes."]),
    ("G47.33", "Obstructive sleep apnea (adult) (pediatric)",
     ["CPAP 10 cm H2O nightly"],
     ["Download CPAP compliance data.", "Sleep medicine follow-up."]),
    ("D50.9", "Iron deficiency anemia, unspecified",
     ["ferrous sulfate 325 mg every other day"],
     ["CBC and ferritin in 8 weeks.", "GI referral for evaluation of blood loss."]),
]

# (presenting complaint, ICD-10-CM code, description, finding, disposition)
_ACUTE = [
    ("chest pain", "R07.9", "Chest pain, unspecified",
     "ECG normal sinus rhythm; troponin negative x2", "discharged home with cardiology follow-up"),
    ("shortness of breath", "R06.02", "Shortness of breath",
     "chest X-ray without infiltrate; SpO2 improved on room air", "discharged home"),
    ("fall onto an outstretched hand", "S52.501A",
     "Unspecified fracture of the lower end of right radius, initial encounter",
     "X-ray shows distal radius fracture, minimally displaced", "splinted; orthopedics in 1 week"),
    ("cough and fever", "J18.9", "Pneumonia, unspecified organism",
     "right lower lobe consolidation on chest X-ray", "started amoxicillin-clavulanate"),
    ("abdominal pain", "R10.31", "Right lower quadrant pain",
     "CT abdomen without appendicitis", "discharged with return precautions"),
    ("headache", "R51.9", "Headache, unspecified",
     "normal neurological exam", "treated with IV fluids and metoclopramide"),
    ("burning on urination", "N39.0", "Urinary tract infection, site not specified",
     "urinalysis positive for nitrites and leukocyte esterase", "nitrofurantoin 100 mg twice daily for 5 days"),
    ("dizziness", "R42", "Dizziness and giddiness",
     "orthostatic vital signs positive", "oral rehydration; medication review"),
    ("ankle injury", "S93.401A", "Sprain of unspecified ligament of right ankle, initial encounter",
     "Ottawa ankle rules negative", "RICE, ankle brace, weight bearing as tolerated"),
    ("hand laceration", "S61.411A", "Laceration without foreign body of right hand, initial encounter",
     "3 cm laceration, tendons intact", "repaired with 5 sutures; Tdap updated"),
    ("wheezing", "J45.901", "Unspecified asthma with (acute) exacerbation",
     "diffuse expiratory wheeze, peak flow 60% predicted", "nebulised albuterol and oral prednisone"),
    ("leg redness and swelling", "L03.115", "Cellulitis of right lower limb",
     "warm erythematous area over the shin, no abscess", "cephalexin 500 mg four times daily for 7 days"),
]

_CLINIC_COMPLAINTS = [
    "routine follow-up of chronic conditions", "medication refill", "fatigue for several weeks",
    "poor sleep", "knee pain when climbing stairs", "intermittent heartburn", "annual wellness visit",
    "review of recent lab results", "elevated home blood pressure readings", "low mood",
]

_ALLERGIES = ["NKDA", "NKDA", "NKDA", "penicillin (rash)", "sulfa drugs (hives)", "codeine (nausea)",
              "latex", "shellfish", "lisinopril (angioedema)"]


def _clinical_setup(fake, rng: random.Random) -> dict:
    clinicians = staff(fake, rng, 14, [", MD", ", MD", ", DO", ", NP", ", PA-C"])
    clinics = [f"{fake.city()} {kind}" for kind in
               ("Family Medicine", "Internal Medicine Associates", "Community Health Center", "Primary Care")]
    hospital = f"{fake.last_name()} Memorial Hospital"
    return {"clinicians": clinicians, "clinics": clinics, "hospital": hospital,
            "mrns": set()}


def _vitals(rng: random.Random, febrile: bool = False) -> dict[str, str]:
    temp = round(rng.uniform(38.0, 39.4) if febrile else rng.uniform(36.3, 37.3), 1)
    return {
        "BP": f"{rng.randint(104, 168)}/{rng.randint(62, 98)} mmHg",
        "HR": f"{rng.randint(56, 112)} bpm",
        "Temp": f"{temp} °C",
        "RR": f"{rng.randint(12, 22)}/min",
        "SpO2": f"{rng.randint(92, 100)}%",
        "Wt": f"{rng.uniform(48, 128):.1f} kg",
    }


def _vitals_text(rng: random.Random, vitals: dict[str, str]) -> str:
    if rng.random() < 0.5:
        return ", ".join(f"{k} {v}" for k, v in vitals.items())
    return "; ".join(f"{k}: {v}" for k, v in vitals.items())


def _age(dob: dt.date, on: dt.date) -> int:
    return on.year - dob.year - ((on.month, on.day) < (dob.month, dob.day))


def _clinical_subject(fake, rng: random.Random, world: dict) -> list[RecordWriter]:
    person = make_person(fake, rng, us=True)
    mrn = fresh_number(rng, 8, world["mrns"])
    conditions = rng.sample(_CHRONIC, rng.randint(1, 3))
    meds = [rng.choice(c[2]) for c in conditions]
    patient = {"person": person, "mrn": mrn, "conditions": conditions, "meds": meds,
               "allergy": rng.choice(_ALLERGIES), "pcp": rng.choice(world["clinicians"]),
               "clinic": rng.choice(world["clinics"])}
    visits = sorted(date_between(rng, dt.date(2019, 1, 1), dt.date(2024, 12, 31)) for _ in range(record_count(rng)))
    templates = [_progress_note, _progress_note, _ed_note, _discharge_summary, _phone_encounter, _referral_letter,
                 _reminder_letter]
    return [rng.choice(templates)(rng, world, patient, day) for day in visits]


def _patient_header(w: RecordWriter, rng: random.Random, patient: dict, day: dt.date) -> None:
    p: Person = patient["person"]
    dob = w.pii("date_of_birth", fmt_date(rng, p.dob, us=True))
    name = w.pii("name", p.name if rng.random() < 0.6 else f"{p.last.upper()}, {p.first}")
    mrn = w.pii("mrn", patient["mrn"])
    style = rng.randrange(3)
    if style == 0:
        w.add(f"Patient: {name}    DOB: {dob}    MRN: {mrn}")
    elif style == 1:
        w.add(f"Name: {name}", f"Date of birth: {dob} ({_age(p.dob, day)} y/o {p.sex})", f"MRN {mrn}")
    else:
        w.add(f"{name} | MRN #{mrn} | D.O.B. {dob} | Sex: {p.sex}")


def _progress_note(rng: random.Random, world: dict, patient: dict, day: dt.date) -> RecordWriter:
    w, p = RecordWriter(), patient["person"]
    w.add(rng.choice(["OUTPATIENT PROGRESS NOTE", "Clinic Visit Note", "PROGRESS NOTE - PRIMARY CARE"]),
          f"{patient['clinic']} - {fmt_date(rng, day, us=True)}")
    _patient_header(w, rng, patient, day)
    complaint = rng.choice(_CLINIC_COMPLAINTS)
    opener = rng.choice([f"{_age(p.dob, day)}-year-old {'woman' if p.sex == 'F' else 'man'} seen for {complaint}.",
                         f"Pt presents for {complaint}.", f"Here today for {complaint}."])
    history = rng.choice(["Reports good adherence to medications.", "Missed several doses last month.",
                          "No new complaints.", "Notes more stress at work.", "Walking 20 minutes most days."])
    w.add("", f"S: {opener} {history} Allergies: {patient['allergy']}.")
    w.add(f"O: {_vitals_text(rng, _vitals(rng))}")
    w.add("A/P:")
    for k, (code, desc, _, plans) in enumerate(patient["conditions"]):
        w.add(f"{k + 1}. {desc} ({code}) - {rng.choice(['stable', 'improving', 'not at goal', 'well controlled'])}."
              f" Continue {patient['meds'][k]}. {rng.choice(plans)}")
    if rng.random() < 0.4:
        w.add(f"Contact: {w.pii('phone', p.phone)}")
    w.add(f"Return in {rng.choice(['4 weeks', '3 months', '6 months', '1 year'])}.",
          f"Electronically signed by {patient['pcp']}")
    return w


def _ed_note(rng: random.Random, world: dict, patient: dict, day: dt.date) -> RecordWriter:
    w, p = RecordWriter(), patient["person"]
    complaint, code, desc, finding, dispo = rng.choice(_ACUTE)
    febrile = code in ("J18.9", "L03.115")
    w.add(f"{world['hospital']} - Emergency Department", f"Date of service: {fmt_date(rng, day, us=True)}")
    _patient_header(w, rng, patient, day)
    w.add(f"Address: {w.pii('address', p.address)}", f"Phone: {w.pii('phone', p.phone)}", "")
    onset = rng.choice(["since this morning", "for 2 days", "for about a week", "after dinner last night"])
    pmh = ", ".join(c[1].split(",")[0] for c in patient["conditions"])
    w.add(f"HPI: {_age(p.dob, day)} y/o {p.sex} with PMH of {pmh} presenting with {complaint} {onset}.")
    w.add(f"Vitals: {_vitals_text(rng, _vitals(rng, febrile))}")
    w.add(f"Workup: {finding}.")
    w.add(f"Impression: {desc} [{code}].")
    w.add(f"Disposition: {dispo}. Home meds unchanged: {'; '.join(patient['meds'])}.")
    w.add(f"Attending: {rng.choice(world['clinicians'])}")
    return w


def _discharge_summary(rng: random.Random, world: dict, patient: dict, day: dt.date) -> RecordWriter:
    w, p = RecordWriter(), patient["person"]
    complaint, code, desc, finding, dispo = rng.choice(_ACUTE)
    out = day + dt.timedelta(days=rng.randint(1, 6))
    w.add("DISCHARGE SUMMARY", world["hospital"])
    _patient_header(w, rng, patient, day)
    w.add(f"Admitted: {fmt_date(rng, day, us=True)}   Discharged: {fmt_date(rng, out, us=True)}", "")
    w.add(f"Principal diagnosis: {code} {desc}")
    w.add("Secondary: " + "; ".join(f"{c[0]} {c[1]}" for c in patient["conditions"]))
    w.add(f"Hospital course: admitted with {complaint}; {finding}. "
          + rng.choice(["Improved with supportive care.", "Course uncomplicated.",
                        "Required one night of telemetry monitoring."]))
    w.add("Discharge medications: " + "; ".join(patient["meds"]) + ".")
    w.add(f"Follow-up with {patient['pcp']} within {rng.choice(['7 days', '2 weeks'])}."
          f" Patient can be reached at {w.pii('phone', p.phone)}.")
    if rng.random() < 0.5:
        w.add(f"Discharge instructions sent to {w.pii('email', p.email)}.")
    return w


def _phone_encounter(rng: random.Random, world: dict, patient: dict, day: dt.date) -> RecordWriter:
    w, p = RecordWriter(), patient["person"]
    k = rng.randrange(len(patient["conditions"]))
    code, desc, _, plans = patient["conditions"][k]
    drug = re.split(r"\s+(?=\d)", patient["meds"][k])[0]  # "metformin 500 mg twice daily" -> "metformin"
    reason = rng.choice([f"requesting a refill of {drug}",
                         f"asking about side effects of {drug}",
                         "asking for lab results", "reporting a missed appointment",
                         f"with questions about {desc.lower()}"])
    name = w.pii("name", p.name)
    w.add(f"TELEPHONE ENCOUNTER {fmt_date(rng, day, us=True)}")
    w.add(f"Caller: {name} (self), MRN {w.pii('mrn', patient['mrn'])}, callback {w.pii('phone', p.phone)}.")
    w.add(f"{p.first} called {reason}. Identity verified with date of birth "
          f"{w.pii('date_of_birth', fmt_date(rng, p.dob, us=True))}.")
    w.add(f"Relevant problem: {desc} ({code}). {rng.choice(plans)}")
    w.add(rng.choice(["Advised to keep the scheduled appointment.", "Message routed to the covering provider.",
                      "Prescription sent to the pharmacy on file.", "Patient verbalized understanding."]))
    w.add(f"- {rng.choice(world['clinicians'])}")
    return w


def _referral_letter(rng: random.Random, world: dict, patient: dict, day: dt.date) -> RecordWriter:
    w, p = RecordWriter(), patient["person"]
    code, desc, _, _ = rng.choice(patient["conditions"])
    specialist = rng.choice([c for c in world["clinicians"] if c != patient["pcp"]])
    w.add(fmt_date(rng, day, us=True), "", f"Dear Dr. {specialist.split(',')[0].split()[-1]},", "")
    w.add(f"Thank you for seeing {p.title}. {w.pii('name', p.name)}, born "
          f"{w.pii('date_of_birth', fmt_date(rng, p.dob, us=True))} (MRN {w.pii('mrn', patient['mrn'])}), "
          f"whom I am referring for further evaluation of {desc.lower()} ({code}).")
    w.add(f"Current medications are {', '.join(patient['meds'])}. Allergies: {patient['allergy']}. "
          + rng.choice(["Symptoms have progressed despite treatment.", "I would value your opinion on next steps.",
                        "Recent labs are attached."]))
    w.add(f"{p.first} lives at {w.pii('address', p.address)} and prefers to be contacted by "
          + (f"phone at {w.pii('phone', p.phone)}." if rng.random() < 0.5 else f"email at {w.pii('email', p.email)}."))
    w.add("", "Sincerely,", patient["pcp"], patient["clinic"])
    return w


def _reminder_letter(rng: random.Random, world: dict, patient: dict, day: dt.date) -> RecordWriter:
    """A form letter: only its fields change from one patient, or one visit, to the next."""
    w, p = RecordWriter(), patient["person"]
    w.add(patient["clinic"], fmt_date(rng, day - dt.timedelta(days=rng.randint(7, 21)), us=True), "")
    w.add(f"{p.title}. {w.pii('name', p.name)}", w.pii("address", p.address), "")
    w.add(f"Dear {p.title}. {p.last},", "")
    w.add(f"This is a reminder of your appointment with {patient['pcp']} on {fmt_date(rng, day, us=True)} at "
          f"{rng.randint(8, 16)}:{rng.choice(['00', '15', '30', '45'])}. Please arrive 15 minutes early and bring "
          f"a list of your current medications, including {patient['meds'][0]}.")
    w.add(f"Your medical record number is {w.pii('mrn', patient['mrn'])} and your date of birth on file is "
          f"{w.pii('date_of_birth', fmt_date(rng, p.dob, us=True))}. Please check both when you arrive.")
    w.add(f"If you need to cancel or reschedule, reply to this letter or call us; we will confirm by text to "
          f"{w.pii('phone', p.phone)}. Patients who miss two appointments may be discharged from the practice.")
    w.add("", "Sincerely,", f"{patient['clinic']} Scheduling Office")
    return w


register(DomainSpec("clinical", "Synthetic clinical notes (US): progress, ED, discharge, phone, referral",
                    True, synthetic_builder("clinical", "en_US", _clinical_setup, _clinical_subject, "patient")))
